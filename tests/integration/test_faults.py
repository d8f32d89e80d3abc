"""Faults of the world around the node: the release bucket, the api-server,
update_engine and a full disk, each checked for its specific outcome.

Every case (tests/reliability.py lists them, with what each finds) runs the
flow under the fault and asserts: the failure names the cause; nothing that
was good is lost (the addons, profiles, next-profile and kubelet.env the node
had); no temporary or partial file is left; the retries are bounded (the
stand-ins count the requests) and pause between attempts; and once the fault
is gone, a run of the flow heals the node.

Three nodes serve all cases, each put back to its start (a snapshot of the
state directories) before a case:

- the new-kubelet bench: a bootstrapped node (docker 17.03 selected) whose
  kubelet.env moves to Kubernetes 1.9, which needs docker 17.06;
- the new-OS bench: a bootstrapped node with an OS update applied, whose
  update operator already set the before-reboot label;
- the bootstrap bench: a fresh node (reboot = no).
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from simnode.bucket import Signer
from simnode.cluster import ANNOTATION, BOARD, CLUO_PREFIX, KUBECONFIG, Cluster, Release, mappings_yaml
from simnode.node import Node
from simnode.pki import make_pki
from tests.reliability import API, BUCKET, CURRENT, DISK, ENGINE, FAULTS, NEXT, Case

from . import nodestate
from .flows import last_run, record, unit_result

RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
UPDATE = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
LABEL = f"{CLUO_PREFIX}/before-reboot"
CASE_DROPIN = "/etc/torcx-tectonic/conf.d/60-case.conf"
#: Quick retries, and a read timeout a stalled server reaches soon. No node labels: their patches of the
#: node would race the annotation's (test_fleet covers them, with an api-server that is down too).
SETTINGS = {"network": {"read_timeout": "2"}, "units": {"retry_delay": "0.5", "retry_attempts": "2"},
            "kubernetes": {"node_labels": "no"}}
RETRY_LINE = "failed (attempt 1 of 2), trying again in 0.5s"
ADDON_1706 = f"/var/lib/torcx/store/{CURRENT}/docker:17.06.torcx.tgz"


def _free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Bench:
    """One node for the cases of one flow, and the state it starts each case from."""

    flow: str
    unit: str
    node: Node
    cluster: Cluster
    start: str
    good: dict[str, str]
    cursor: str = ""

    def reset(self) -> None:
        """The node, the stand-ins and their logs as at the bench's start."""
        nodestate.restore(self.node, self.start)
        self.node.run("rm", "-f", CASE_DROPIN)
        bucket, api = self.cluster.bucket, self.cluster.api
        bucket.clear_faults()
        api.clear_faults()
        bucket.log.clear()
        api.log.clear()
        api.update_node_metadata("node-1", remove_annotations=[ANNOTATION])
        api.set_runtime_mappings(mappings_yaml(self.cluster.mappings))
        if self.flow == "bootstrap":  # update_engine idle again, without the marker of an update
            self.node.systemctl("restart", "update-engine.service")
            self.node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1",
                          "com.coreos.update1.Manager", "ResetStatus")
        self.cursor = self.node.run("journalctl", "-n", "0", "--show-cursor", "-q").stdout.split("cursor: ")[-1].strip()

    def configure(self, sections: dict[str, dict[str, str]]) -> None:
        self.node.write(CASE_DROPIN, "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                                             for name, values in sections.items()))

    def run(self) -> dict[str, Any]:
        """Run the flow as its trigger does; its run record."""
        self.node.systemctl("start", self.unit, check=False, timeout=180)
        if self.flow == "new-kubelet":
            self.node.wait_for(lambda: unit_result(self.node, "torcx-new-kubelet-recheck.service")[0] in (
                "inactive", "failed"), timeout=60, what="the re-check")
        return last_run(self.node, self.flow)

    def journal(self) -> str:
        return self.node.journal(extra=["--after-cursor", self.cursor, "-t", f"torcx-{self.flow}-docker-version",
                                        "-t", f"torcx-{self.flow}-addons", "-t", f"torcx-{self.flow}-annotate",
                                        "-t", f"torcx-{self.flow}-os-version", "-t", f"torcx-{self.flow}-os-update"])

    def product(self) -> dict[str, str]:
        """The node's product files (no records, no manifest cache: a verified manifest may stay)."""
        state = nodestate.observe(self.node, self.flow, with_records=False).state
        return {k: v for k, v in state.items() if not k.startswith("/var/cache/")}

    def assert_failed(self, step: str, *phrases: str, retried: bool = True) -> str:
        """The run failed at ``step`` naming the cause; nothing good lost, nothing half-written."""
        run = last_run(self.node, self.flow)
        assert (run["result"], run["failed_step"]) == ("failed", step), run
        for phrase in phrases:
            assert phrase in run["failure"], (phrase, run["failure"])
        if retried:
            assert RETRY_LINE in self.journal(), self.journal()[-3000:]
        found = nodestate.observe(self.node, self.flow, with_records=False)
        assert found.temporary == [], found.temporary
        product = {k: v for k, v in found.state.items() if not k.startswith("/var/cache/")}
        lost = {k: (self.good.get(k), product.get(k)) for k in set(self.good) | set(product)
                if self.good.get(k) != product.get(k) and not k.startswith("/var/lib/torcx/store/" + NEXT)}
        assert lost == {}, f"changed by a failed run: {lost}"
        return str(run["failure"])

    def assert_heals(self) -> dict[str, Any]:
        run = self.run()
        assert run["result"] == "ok", (run, self.journal()[-3000:])
        assert nodestate.observe(self.node, self.flow, with_records=False).temporary == []
        return run


@contextlib.contextmanager
def _bench(flow: str, bundle: Path) -> Iterator[Bench]:
    with tempfile.TemporaryDirectory(prefix="tt-faults-") as tmp, Cluster(Path(tmp), RELEASES) as cluster:
        settings = {**SETTINGS, "bootstrap": {"reboot": "no"}}
        files = {**cluster.node_files(settings), **nodestate.NO_START_LIMIT}
        if flow == "new-kubelet":
            files.update(cluster.bootstrapped_files(CURRENT, kube_tag="v1.9.1_coreos.0"))
            unit = "torcx-new-kubelet-addons.service"
        elif flow == "new-os":
            files.update(cluster.bootstrapped_files(CURRENT))
            cluster.api.update_node_metadata("node-1", set_labels={LABEL: "true"}, source="operator")
            unit = "torcx-new-os.target"
        else:
            unit = "torcx-bootstrap.target"
            # the last step starts the path units: they must not run other flows between the cases
            files.update({f"/etc/systemd/system/{u}.d/90-tt-faults.conf": "[Unit]\nConditionPathExists=/tt-never\n"
                          for u in ("torcx-new-os.path", "torcx-new-kubelet.path")})
        with Node(bundle=bundle, os_version=CURRENT, files=files, update_engine={"mode": "none"}) as node:
            node.boot()
            node.systemctl("stop", "torcx-new-os.path", "torcx-new-kubelet.path", check=False)
            if flow == "new-os":
                node.set_update_engine(UPDATE)
                node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1",
                         "com.coreos.update1.Manager", "AttemptUpdate")
                node.wait_for(node.update_marker_exists, what="the update to be applied")
            start = nodestate.snapshot(node, f"/run/tt-faults/{flow}-start.tar")
            bench = Bench(flow, unit, node, cluster, start, {})
            bench.good = bench.product()
            yield bench


class Benches:
    """One bench at a time, the one of the case at hand (cases are ordered by bench)."""

    def __init__(self, bundle: Path) -> None:
        self.bundle = bundle
        self.stack = contextlib.ExitStack()
        self.flow: str | None = None
        self.bench: Bench | None = None

    def get(self, flow: str) -> Bench:
        if self.flow != flow or self.bench is None:
            self.stack.close()
            self.bench, self.flow = None, None
            self.bench = self.stack.enter_context(_bench(flow, self.bundle))
            self.flow = flow
        return self.bench


@pytest.fixture(scope="module")
def benches(bundle: Path) -> Iterator[Benches]:
    running = Benches(bundle)
    with running.stack:
        yield running


# --- the release bucket (new-kubelet bench) ----------------------------------------------------------------

def _requests(bench: Bench, prefix: str) -> list[float]:
    """When the bucket saw requests under ``prefix`` (since the case began); a
    full path counts only itself (not its ``.asc``)."""
    return [r.time for r in bench.cluster.bucket.requests_for(prefix)
            if prefix.endswith("/") or r.url_path == prefix]


def _paused(times: list[float], attempts: int = 2) -> None:
    """The attempts were apart: the step paused between them (at least the configured 0.5s)."""
    assert len(times) >= attempts, times
    assert max(b - a for a, b in zip(times, times[1:])) >= 0.5, times


def _healed_kubelet(bench: Bench) -> None:
    bench.assert_heals()
    assert bench.node.host_path(ADDON_1706).is_file()
    profile = json.loads(bench.node.host_path("/etc/torcx/profiles/tectonic.json").read_text())
    assert profile["value"]["images"] == [{"name": "docker", "reference": "17.06"}]


def _manifest(bench: Bench) -> Path:
    return bench.cluster.bucket.manifest_path(BOARD, CURRENT)


def bucket_status(status: int, prefix: str, per_attempt: int) -> Callable[[Bench], None]:
    step = "docker-version" if prefix == "/manifests/" else "addons"

    def case(bench: Bench) -> None:
        bench.cluster.bucket.set_fault(prefix, status=status)
        bench.run()
        bench.assert_failed(step, f"answered {status}")
        times = _requests(bench, prefix)
        assert len(times) == 2 * per_attempt, times  # bounded: two attempts, each retried as configured
        _paused(times)
        bench.cluster.bucket.clear_faults()
        _healed_kubelet(bench)

    return case


def bucket_refused(bench: Bench) -> None:
    port = _free_port()
    bench.configure({"torcx": {"manifest_url": f"https://localhost:{port}/m/{{{{.Board}}}}/{{{{.OSVersion}}}}/x.json"}})
    bench.run()
    bench.assert_failed("docker-version", f"cannot reach https://localhost:{port}/m/{BOARD}/{CURRENT}/x.json",
                        "connection refused")
    bench.node.run("rm", "-f", CASE_DROPIN)
    _healed_kubelet(bench)


MANIFEST = f"/manifests/{BOARD}/{CURRENT}/torcx_manifest.json"
ADDON = f"/addons/{BOARD}/{CURRENT}/docker:17.06.torcx.tgz"


def bucket_broken_body(prefix: str, *phrases: str, step: str, **broken: Any) -> Callable[[Bench], None]:
    """The manifest or the addon itself breaks (not the manifest's signature)."""

    def case(bench: Bench) -> None:
        bench.cluster.bucket.set_fault(prefix, exact=True, **broken)
        bench.run()
        bench.assert_failed(step, *(p.replace("{port}", str(bench.cluster.bucket.port)) for p in phrases))
        times = _requests(bench, prefix)
        assert len(times) == 2, times  # a broken body is not retried within a request: once per attempt
        _paused(times)
        bench.cluster.bucket.clear_faults()
        _healed_kubelet(bench)

    return case


def bucket_redirect_loop(bench: Bench) -> None:
    url = f"/manifests/{BOARD}/{CURRENT}/torcx_manifest.json"
    bench.cluster.bucket.set_fault("/manifests/", redirect=url)
    bench.run()
    bench.assert_failed("docker-version", "Exceeded 5 redirects")
    times = _requests(bench, "/manifests/")
    assert len(times) == 2 * 6, times  # the request and 5 redirects, per attempt
    bench.cluster.bucket.clear_faults()
    _healed_kubelet(bench)


def bucket_wrong_hash(bench: Bench) -> None:
    addon = bench.cluster.bucket.addon_path(BOARD, CURRENT, "17.06")
    good = addon.read_bytes()
    bench.cluster.bucket.corrupt_addon(BOARD, CURRENT, "17.06")
    bench.run()
    bench.assert_failed("addons", "sha512 mismatch for docker:17.06.torcx.tgz", "nothing was stored")
    first = next(line for line in bench.journal().splitlines() if RETRY_LINE in line)
    assert "1 more attempt over the next 0.5s of pauses (0.5s), within the unit's limit of" in first
    assert "rarely fixes itself" in first
    assert len(bench.cluster.addon_downloads()) == 2
    addon.write_bytes(good)
    _healed_kubelet(bench)


def bucket_signature(breaks: Callable[[Bench], None], *phrases: str, hint: bool = False) -> Callable[[Bench], None]:
    def case(bench: Bench) -> None:
        raw = _manifest(bench).read_bytes()
        breaks(bench)
        bench.run()
        bench.assert_failed("docker-version", *phrases)
        if hint:
            first = next(line for line in bench.journal().splitlines() if RETRY_LINE in line)
            assert "rarely fixes itself" in first and "1 more attempt" in first, first
        _paused(_requests(bench, "/manifests/"))
        bench.cluster.bucket.write_raw_manifest(BOARD, CURRENT, raw, sign=True)
        _healed_kubelet(bench)

    return case


def _strangers_signature(bench: Bench) -> None:
    with Signer() as stranger:
        bench.cluster.bucket.resign_with(stranger, BOARD, CURRENT)


def bucket_bad_manifest(text: Callable[[bytes], bytes], *phrases: str) -> Callable[[Bench], None]:
    def case(bench: Bench) -> None:
        raw = _manifest(bench).read_bytes()
        bench.cluster.bucket.write_raw_manifest(BOARD, CURRENT, text(raw), sign=True)
        bench.run()
        bench.assert_failed("docker-version", *phrases)
        bench.cluster.bucket.write_raw_manifest(BOARD, CURRENT, raw, sign=True)
        _healed_kubelet(bench)

    return case


def _other_kind(raw: bytes) -> bytes:
    document = json.loads(raw)
    document["kind"] = "torcx-package-list-v1"
    return json.dumps(document).encode()


def disk_full(bench: Bench) -> None:
    store = f"/var/lib/torcx/store/{CURRENT}"
    node = bench.node
    # the store on a one-page tmpfs that holds the addon it has: no room for another
    node.run("sh", "-c", f"cp -a {store} /run/tt-store && mount -t tmpfs -o size=4k tmpfs {store} && "
             f"cp -a /run/tt-store/. {store}/ && rm -r /run/tt-store")
    try:
        before = node.run("sha256sum", f"{store}/docker:17.03.torcx.tgz").stdout.split()[0]
        bench.run()
        # the node refused: not retried (a full disk is an operator's to free), the flow fails at once
        bench.assert_failed("addons", f"No space left on device: '{ADDON_1706}'", retried=False)
        assert node.run("ls", "-A", store).stdout.split() == ["docker:17.03.torcx.tgz"]  # no partial addon
        assert node.run("sha256sum", f"{store}/docker:17.03.torcx.tgz").stdout.split()[0] == before
        node.run("mount", "-o", "remount,size=1m", store)
        bench.assert_heals()
        assert node.run("ls", "-A", store).stdout.split() == ["docker:17.03.torcx.tgz", "docker:17.06.torcx.tgz"]
    finally:
        node.run("umount", store, check=False)


# --- the api-server (new-OS bench) -------------------------------------------------------------------------

def _healed_new_os(bench: Bench) -> None:
    bench.assert_heals()
    assert bench.cluster.api.annotations("node-1").get(ANNOTATION) == "true"
    assert bench.node.host_path(f"/var/lib/torcx/store/{NEXT}/docker:17.03.torcx.tgz").is_file()


def _no_annotation(bench: Bench) -> None:
    assert ANNOTATION not in bench.cluster.api.annotations("node-1")


def _kubeconfig(bench: Bench, change: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
    """Change the node's kubeconfig; returns what puts it back."""
    good = bench.node.read(KUBECONFIG)
    document = yaml.safe_load(good)
    change(document)
    bench.node.write(KUBECONFIG, yaml.safe_dump(document), mode=0o600)
    return lambda: bench.node.write(KUBECONFIG, good, mode=0o600)


def api_annotation_fails(change: Callable[[Bench], Callable[[], None]], *phrases: str,
                         fallback: str | None = None) -> Callable[[Bench], None]:
    def case(bench: Bench) -> None:
        _no_annotation(bench)
        heal = change(bench)
        bench.run()
        bench.assert_failed("annotate", *phrases)
        _no_annotation(bench)
        if fallback:
            assert fallback in bench.journal()
            assert record(bench.node, "new-os", "runtime-choice")["mapping_source"] == \
                "/etc/kubernetes/installer/runtime-mappings.yaml"
        heal()
        _healed_new_os(bench)

    return case


def _api_down(bench: Bench) -> Callable[[], None]:
    port = _free_port()
    return _kubeconfig(bench, lambda doc: doc["clusters"][0]["cluster"].update(server=f"https://127.0.0.1:{port}"))


def _wrong_token(bench: Bench) -> Callable[[], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["users"][0]["user"] = {"token": "not-the-token"}

    return _kubeconfig(bench, change)


def _other_node(bench: Bench) -> Callable[[], None]:
    bench.cluster.api.create_node("node-2", labels={LABEL: "true"})
    bench.configure({"kubernetes": {"node_name": "node-2"}})

    def heal() -> None:
        bench.node.run("rm", "-f", CASE_DROPIN)

    return heal


def _wrong_ca(bench: Bench) -> Callable[[], None]:
    with tempfile.TemporaryDirectory(prefix="tt-other-pki-") as other_dir:
        other = make_pki(Path(other_dir), node_name="node-1")
        ca = base64.b64encode(other.ca_cert_pem).decode()
    return _kubeconfig(bench, lambda doc: doc["clusters"][0]["cluster"].update({"certificate-authority-data": ca}))


def _wrong_name(bench: Bench) -> Callable[[], None]:
    hosts = bench.node.read("/etc/hosts")
    bench.node.write("/etc/hosts", hosts + "127.0.0.1 api.wrong-name.test\n")
    port = bench.cluster.api.port
    put_back = _kubeconfig(bench, lambda doc: doc["clusters"][0]["cluster"].update(
        server=f"https://api.wrong-name.test:{port}"))

    def heal() -> None:
        put_back()
        bench.node.write("/etc/hosts", hosts)

    return heal


def _slow_api(bench: Bench) -> Callable[[], None]:
    bench.cluster.api.set_fault("/api/v1/nodes/", delay=3)
    return bench.cluster.api.clear_faults


def api_configmap_without_key(bench: Bench) -> None:
    api = bench.cluster.api
    api.set_configmap("tectonic-system", "tectonic-torcx-runtime-mappings", {"other.yaml": "x: 1\n"})
    try:
        run = bench.run()
        assert run["result"] == "ok", run
        assert "ConfigMap tectonic-system/tectonic-torcx-runtime-mappings has no runtime-mappings.yaml; using the " \
               "node-local runtime mappings" in bench.journal()
        assert record(bench.node, "new-os", "runtime-choice")["mapping_source"] == \
            "/etc/kubernetes/installer/runtime-mappings.yaml"
        _healed_new_os(bench)
    finally:
        api.set_runtime_mappings(mappings_yaml(bench.cluster.mappings))


def api_invalid_yaml(bench: Bench) -> None:
    api = bench.cluster.api
    api.set_runtime_mappings("kind: VersionManifestV1\nversions: [unclosed\n")
    bench.run()
    bench.assert_failed("docker-version", "ConfigMap tectonic-system/tectonic-torcx-runtime-mappings")
    for step in ("addons", "gc", "annotate"):
        assert unit_result(bench.node, f"torcx-new-os-{step}.service")[0] == "inactive", step
    _no_annotation(bench)
    api.set_runtime_mappings(mappings_yaml(bench.cluster.mappings))
    _healed_new_os(bench)


def api_conflict(bench: Bench) -> None:
    api = bench.cluster.api
    api.set_fault("/api/v1/nodes/node-1", status=409, method="PATCH", times=1)
    run = bench.run()
    assert run["result"] == "ok", run
    patches = [r.status for r in api.requests_for("/api/v1/nodes/node-1", method="PATCH")]
    assert patches == [409, 200], patches
    assert "annotate failed (attempt 1 of 2), trying again in 0.5s" in bench.journal()
    assert "answered 409" in bench.journal()
    assert api.annotations("node-1").get(ANNOTATION) == "true"


# --- update_engine ---------------------------------------------------------------------------------------

def engine_not_on_the_bus(bench: Bench) -> None:
    bench.node.systemctl("stop", "update-engine.service")
    try:
        bench.run()
        bench.assert_failed("os-version", "update_engine GetStatus failed",
                            "is update-engine.service running on the system bus?", retried=False)
        assert not bench.node.host_path(f"/var/lib/torcx/store/{NEXT}").exists()
        _no_annotation(bench)
    finally:
        bench.node.systemctl("start", "update-engine.service")
    _healed_new_os(bench)


def _bootstrap(bench: Bench, scenario: dict[str, Any], settings: dict[str, str]) -> tuple[dict[str, Any], int]:
    """The bootstrap with update_engine doing ``scenario``: its run record, and
    how many times it asked update_engine for an update."""
    bench.node.set_update_engine(scenario)
    bench.configure({"bootstrap": settings})
    before = bench.node.update_engine_attempts()  # counted since the service started, across cases
    run = bench.run()
    return run, bench.node.update_engine_attempts() - before


def _healed_bootstrap(bench: Bench, next_os: bool) -> None:
    bench.node.run("rm", "-f", CASE_DROPIN, "/etc/kubernetes/kubelet.env")
    bench.node.systemctl("restart", "update-engine.service")  # a hung update ends with update_engine
    bench.node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                   "ResetStatus")
    bench.node.set_update_engine(UPDATE)
    bench.assert_heals()
    assert bench.node.host_path(f"/var/lib/torcx/store/{NEXT}/docker:17.03.torcx.tgz").is_file() is True
    assert next_os or record(bench.node, "bootstrap", "os-versions")["next"] == NEXT


def engine_error_event(bench: Bench) -> None:
    run, attempts = _bootstrap(bench, {"mode": "error", "step_seconds": 0.05}, {"os_update_attempts": "2"})
    assert run["result"] == "ok", run
    versions = record(bench.node, "bootstrap", "os-versions")
    assert (versions["update"], versions["next"]) == ("failed", None)
    assert versions["update_failures"] == ["update_engine reported an error event (attempt 1)",
                                           "update_engine reported an error event (attempt 2)"]
    assert "continuing on the running OS 1632.3.0" in versions["warning"]
    assert attempts == 2
    assert nodestate.observe(bench.node, "bootstrap").temporary == []
    _healed_bootstrap(bench, next_os=False)


def engine_never_ends(bench: Bench) -> None:
    run, attempts = _bootstrap(bench, {"mode": "hang", "step_seconds": 0.05},
                               {"os_update_attempts": "1", "os_update_timeout": "3"})
    assert run["result"] == "ok", run
    versions = record(bench.node, "bootstrap", "os-versions")
    assert versions["update_failures"] == ["update_engine did not finish within 3s (last state "
                                           "UPDATE_STATUS_DOWNLOADING)"]
    assert attempts == 1
    _healed_bootstrap(bench, next_os=False)


def engine_empty_version(bench: Bench) -> None:
    run, _ = _bootstrap(bench, {"mode": "update", "new_version": "", "step_seconds": 0.05}, {})
    assert (run["result"], run["failed_step"]) == ("failed", "os-update"), run
    assert "update_engine has applied an OS update but reports its version as ''" in run["failure"]
    assert bench.product() == bench.good
    assert nodestate.observe(bench.node, "bootstrap").temporary == []
    bench.node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                   "ResetStatus")
    _healed_bootstrap(bench, next_os=True)


CASES: dict[str, tuple[str, Callable[[Bench], None]]] = {
    f"{BUCKET}/manifest-404": ("new-kubelet", bucket_status(404, "/manifests/", 1)),
    f"{BUCKET}/manifest-500": ("new-kubelet", bucket_status(500, "/manifests/", 2)),
    f"{BUCKET}/addon-503": ("new-kubelet", bucket_status(503, "/addons/", 2)),
    f"{BUCKET}/refused": ("new-kubelet", bucket_refused),
    f"{BUCKET}/manifest-stalls": ("new-kubelet", bucket_broken_body(
        MANIFEST, f"reading https://localhost:{{port}}{MANIFEST} broke off after", "Read timed out",
        step="docker-version", body_bytes=100, stall=30)),
    f"{BUCKET}/addon-stalls": ("new-kubelet", bucket_broken_body(
        ADDON, f"download from https://localhost:{{port}}{ADDON} broke off after", "Read timed out", step="addons",
        body_bytes=64, stall=30)),
    f"{BUCKET}/manifest-truncated": ("new-kubelet", bucket_broken_body(
        MANIFEST, f"reading https://localhost:{{port}}{MANIFEST} broke off after 100 of the", "closed early",
        step="docker-version", body_bytes=100)),
    f"{BUCKET}/addon-truncated": ("new-kubelet", bucket_broken_body(
        ADDON, f"download from https://localhost:{{port}}{ADDON} broke off after 64 of the", "closed early",
        step="addons", body_bytes=64)),
    f"{BUCKET}/manifest-longer": ("new-kubelet", bucket_broken_body(
        MANIFEST, "failed: bad signature", step="docker-version", content_length=100)),
    f"{BUCKET}/addon-longer": ("new-kubelet", bucket_broken_body(
        ADDON, "sha512 mismatch", "nothing was stored", step="addons", content_length=100)),
    f"{BUCKET}/redirect-loop": ("new-kubelet", bucket_redirect_loop),
    f"{BUCKET}/wrong-hash": ("new-kubelet", bucket_wrong_hash),
    f"{BUCKET}/missing-signature": ("new-kubelet", bucket_signature(
        lambda b: b.cluster.bucket.drop_signature(BOARD, CURRENT), "is not signed", ".asc does not exist")),
    f"{BUCKET}/bad-signature": ("new-kubelet", bucket_signature(
        lambda b: b.cluster.bucket.tamper_manifest(BOARD, CURRENT), "bad signature")),
    f"{BUCKET}/strangers-signature": ("new-kubelet", bucket_signature(
        _strangers_signature, "signed by a key not in the keyring", hint=True)),
    f"{BUCKET}/wrong-kind": ("new-kubelet", bucket_bad_manifest(
        _other_kind, "kind is 'torcx-package-list-v1'; expected 'torcx-package-list-v0'")),
    f"{BUCKET}/invalid-json": ("new-kubelet", bucket_bad_manifest(lambda raw: b"{not json", "not valid JSON")),
    f"{BUCKET}/huge-manifest": ("new-kubelet", bucket_bad_manifest(
        lambda raw: b" " * (9 << 20) + raw, "is larger than 8388608 bytes")),
    f"{DISK}/store-full": ("new-kubelet", disk_full),
    f"{API}/refused": ("new-os", api_annotation_fails(
        _api_down, "cannot reach https://127.0.0.1:", "connection refused",
        fallback="using the node-local runtime mappings")),
    f"{API}/unauthorized": ("new-os", api_annotation_fails(
        _wrong_token, "answered 401: Unauthorized", fallback="answered 401")),
    f"{API}/forbidden": ("new-os", api_annotation_fails(_other_node, 'answered 403: nodes "node-2" is forbidden')),
    f"{API}/wrong-ca": ("new-os", api_annotation_fails(_wrong_ca, "TLS verification failed for https://127.0.0.1:",
                                                       "certificate verify failed")),
    f"{API}/hostname-mismatch": ("new-os", api_annotation_fails(
        _wrong_name, "TLS verification failed for https://api.wrong-name.test:",
        "hostname 'api.wrong-name.test' doesn't match")),
    f"{API}/slow": ("new-os", api_annotation_fails(_slow_api, "Read timed out")),
    f"{API}/configmap-without-key": ("new-os", api_configmap_without_key),
    f"{API}/invalid-yaml": ("new-os", api_invalid_yaml),
    f"{API}/conflict": ("new-os", api_conflict),
    f"{ENGINE}/not-on-the-bus": ("new-os", engine_not_on_the_bus),
    f"{ENGINE}/error-event": ("bootstrap", engine_error_event),
    f"{ENGINE}/never-ends": ("bootstrap", engine_never_ends),
    f"{ENGINE}/empty-version": ("bootstrap", engine_empty_version),
}
#: The benches in the order their cases run (one node at a time).
ORDER = ("new-kubelet", "new-os", "bootstrap")
ORDERED = sorted(FAULTS, key=lambda c: ORDER.index(CASES[f"{c.area}/{c.id}"][0]))


def test_every_fault_of_the_campaign_has_a_case_here() -> None:
    assert sorted(CASES) == sorted(f"{c.area}/{c.id}" for c in FAULTS)


@pytest.mark.parametrize("case", ORDERED, ids=[f"{c.area}/{c.id}" for c in ORDERED])
def test_fault(case: Case, benches: Benches) -> None:
    flow, check = CASES[f"{case.area}/{case.id}"]
    bench = benches.get(flow)
    bench.reset()
    check(bench)
