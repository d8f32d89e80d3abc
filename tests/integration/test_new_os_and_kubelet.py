"""The new-OS and new-kubelet flows, triggered by their path units in a real systemd.

Each node starts bootstrapped (kubelet.env, the addon for the running OS and
the profile selecting it); then update_engine applies an update, or the
kubelet.env changes, and the product acts without any command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simnode.cluster import ANNOTATION, BOARD, CLUO_PREFIX, Cluster, Release
from simnode.node import Node
from simnode.proxy import Proxy

from .flows import (
    failure,
    last_run,
    record,
    settled_record,
    start_bootstrap,
    status,
    step_done,
    step_run,
    unit_result,
)

CURRENT, NEXT = "1632.3.0", "1688.5.3"
RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
LABEL = f"{CLUO_PREFIX}/before-reboot"
#: Versioned stores older than the running OS, and things GC must not touch.
OLD_STORES = {
    "/var/lib/torcx/store/1520.3.0/docker:1.12.torcx.tgz": b"old",
    "/var/lib/torcx/store/1600.0.0/docker:17.03.torcx.tgz": b"old",
    "/var/lib/torcx/store/docker:1.12.torcx.tgz": b"unversioned store",
    "/var/lib/torcx/store/notes/readme": b"not a version",
}
NEW_OS_STEPS = ("os-version", "kubelet-version", "docker-version", "addons", "gc", "annotate")


@contextmanager
def bootstrapped(bundle: Path, tmp_path: Path, releases: list[Release] = RELEASES, *,
                 files: Mapping[str, bytes | str] | None = None,
                 settings: Mapping[str, Mapping[str, str]] | None = None,
                 update_engine: Mapping[str, Any] | None = None,
                 **cluster_args: Any) -> Iterator[tuple[Cluster, Node]]:
    with Cluster(tmp_path, releases, **cluster_args) as cluster:
        all_files = {**cluster.node_files(settings), **cluster.bootstrapped_files(CURRENT), **(files or {})}
        with Node(bundle=bundle, os_version=CURRENT, files=all_files,
                  update_engine=update_engine or {"mode": "none"}) as node:
            yield cluster, node


def apply_update(node: Node, version: str = NEXT) -> None:
    """What update_engine does on its own schedule: check, download, apply."""
    node.set_update_engine({"mode": "update", "new_version": version, "step_seconds": 0.05})
    node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
             "AttemptUpdate")


def store_file(node: Node, os_version: str, version: str) -> Path:
    return node.host_path(f"/var/lib/torcx/store/{os_version}/docker:{version}.torcx.tgz")


def selected(node: Node) -> str:
    profile = json.loads(node.host_path("/etc/torcx/profiles/tectonic.json").read_text())
    return str(profile["value"]["images"][0]["reference"])


def test_new_os_fetches_the_addon_gcs_old_stores_and_annotates_under_the_label(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path, files=OLD_STORES) as (cluster, node):
        node.boot()
        operator = cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=6)
        apply_update(node)

        node.wait_for(lambda: step_done(node, "new-os", "gc"), timeout=60, what="new-OS GC")
        assert store_file(node, NEXT, "17.03").is_file()
        assert selected(node) == "17.03"
        for old in ("1520.3.0", "1600.0.0"):
            assert not node.host_path(f"/var/lib/torcx/store/{old}").exists()
        for kept in ("/var/lib/torcx/store/docker:1.12.torcx.tgz", "/var/lib/torcx/store/notes/readme"):
            assert node.host_path(kept).is_file(), kept
        assert store_file(node, CURRENT, "17.03").is_file()
        assert ANNOTATION not in cluster.api.annotations()  # nothing before the label

        assert operator.wait(timeout=30) and operator.at is not None
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=60, what="annotation step")
        assert last_run(node, "new-os")["result"] == "ok"
        assert cluster.api.labels()[LABEL] == "true"
        assert cluster.api.annotations()[ANNOTATION] == "true"
        written = [s for s in cluster.api.node_history() if s.annotations.get(ANNOTATION) == "true"]
        assert written and written[0].time >= operator.at
        assert "waiting for the update operator to label node node-1" in node.journal("torcx-new-os-annotate.service")
        # the operator's view: the next OS has its Docker
        code, document = status(node)
        assert (code, document["os"]["next"], document["verdict"]["next"]["ok"]) == (0, NEXT, True), document
        assert document["verdict"]["next"]["runtime_version"] == "17.03"


def test_new_os_without_a_mapped_docker_sends_no_annotation_and_removes_nothing(bundle: Path,
                                                                                   tmp_path: Path) -> None:
    releases = [Release(CURRENT, ["17.03"]), Release(NEXT, ["1.12"])]
    quick_backoff = {"units": {"backoff_delay": "2", "backoff_max_delay": "4"}}
    with bootstrapped(bundle, tmp_path, releases, files=OLD_STORES, mappings={"1.8": ["17.03"]},
                      settings=quick_backoff) as (cluster, node):
        node.boot()
        cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=0.5)
        apply_update(node)
        node.wait_for(lambda: last_run(node, "new-os")["result"] == "failed"
                      if node.exists("/var/lib/torcx-tectonic/runs/new-os.json") else False, timeout=60,
                      what="the Docker step to fail")
        error = failure(node, "new-os", "docker-version")
        assert "no docker version for Kubernetes v1.8.4+coreos.0" in error
        assert "the manifest for OS 1688.5.3 offers 1.12" in error
        time.sleep(3)  # let anything that would wrongly follow happen
        assert ANNOTATION not in cluster.api.annotations()
        for old in OLD_STORES:
            assert node.host_path(old).is_file(), old
        assert not node.host_path(f"/var/lib/torcx/store/{NEXT}").exists()
        assert "failed (attempt 1 of 2)" in node.journal("torcx-new-os-docker-version.service")
        # the operator's view says so: the next OS has no Docker its Kubernetes accepts
        code, document = status(node)
        assert (code, document["verdict"]["next"]["ok"]) == (1, False)
        assert f"none of the stores OS {NEXT} reads" in document["verdict"]["next"]["reason"]
        # the flow is started again at its next try (the backoff): the failure stays visible
        run = document["flows"]["new-os"]["last_run"]
        assert run["failed_step"] == "docker-version" or "failed at docker-version" in run["previous_failure"], run

        # A fixed ConfigMap heals the node: the flow is tried again on its own.
        cluster.api.set_runtime_mappings({"kind": "VersionManifestV1",
                                          "versions": {"k8s": {"1.8": {"docker": ["17.03", "1.12"]}}}})
        node.wait_for(lambda: cluster.api.annotations().get(ANNOTATION) == "true", timeout=90,
                      what="the annotation after the ConfigMap was fixed")
        assert store_file(node, NEXT, "1.12").is_file()
        assert selected(node) == "1.12"


def test_marker_present_at_boot_starts_the_new_os_flow_once(bundle: Path, tmp_path: Path) -> None:
    files = {"/run/update_engine_autoupdate_completed": "", "/run/fake-update-engine/new_version": NEXT}
    with bootstrapped(bundle, tmp_path, files=files) as (cluster, node):
        cluster.api.update_node_metadata("node-1", set_labels={LABEL: "true"}, source="operator")
        node.boot()
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=60, what="new-OS flow")
        assert store_file(node, NEXT, "17.03").is_file()
        time.sleep(3)
        assert node.journal("torcx-new-os-os-version.service").count("next OS 1688.5.3") == 1
        assert unit_result(node, "torcx-new-os.target")[0] == "active"


def test_new_kubelet_version_installs_and_selects_its_docker(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        node.boot()
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
        node.wait_for(lambda: step_done(node, "new-kubelet", "addons"), timeout=60, what="new-kubelet flow")
        assert store_file(node, CURRENT, "17.06").is_file()
        assert not node.host_path(f"/var/lib/torcx/store/{NEXT}").exists()  # no update pending
        assert selected(node) == "17.06"
        assert json.loads(node.host_path("/var/lib/torcx-tectonic/docker-reset-needed").read_text()) == {
            "from": "17.03", "to": "17.06"}
        assert record(node, "new-kubelet", "addons")["runtime_changed"] is True
        assert unit_result(node, "kubelet.service")[0] != "deactivating"

        # The same version again: nothing downloaded, nothing rewritten. (Wait for the
        # first run to end: a change during it would only merge into it.)
        node.wait_for(lambda: step_done(node, "new-kubelet", "recheck")
                      and unit_result(node, "torcx-new-kubelet-addons.service")[0] == "inactive",
                      timeout=30, what="the first run to end")
        watched = [store_file(node, CURRENT, "17.06"), node.host_path("/etc/torcx/profiles/tectonic.json"),
                   node.host_path("/etc/torcx/next-profile")]
        before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in watched}
        downloads = cluster.addon_downloads()
        first = last_run(node, "new-kubelet")["id"]
        node.write("/etc/kubernetes/kubelet.env",
                   "# same version\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
        node.wait_for(lambda: last_run(node, "new-kubelet")["id"] != first and step_done(node, "new-kubelet", "addons"),
                      timeout=60, what="second new-kubelet run")
        second = record(node, "new-kubelet", "addons")
        # nothing rewritten, and the change still pending: Docker 17.03, which torcx applied at boot, runs
        assert second["changed_files"] == [] and second["previous"] == "17.03" and second["runtime_changed"] is True
        assert cluster.addon_downloads() == downloads
        assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in watched} == before


def test_kubelet_change_during_a_new_os_flow_runs_after_it_and_wins(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        cluster.api.update_node_metadata("node-1", set_labels={LABEL: "true"}, source="operator")
        cluster.bucket.set_fault("/addons/", delay=3)  # a slow bucket keeps the new-OS flow busy
        node.boot()
        apply_update(node)
        node.wait_for(lambda: step_done(node, "new-os", "docker-version"), timeout=60, what="new-OS decision")
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
        node.wait_for(lambda: step_done(node, "new-kubelet", "addons"), timeout=90, what="new-kubelet flow")
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=60, what="new-OS flow")

        new_os_gc = step_run(node, "new-os", "gc")
        assert new_os_gc["finished"] <= last_run(node, "new-kubelet")["started"]  # one after the other
        assert record(node, "new-os", "addons")["version"] == "17.03"
        assert record(node, "new-kubelet", "addons")["version"] == "17.06"
        assert selected(node) == "17.06"
        assert store_file(node, NEXT, "17.06").is_file() and store_file(node, CURRENT, "17.06").is_file()
        assert "waiting for new-os to finish before new-kubelet runs" in node.journal(extra=["-t",
                                                                                               "torcx-tectonic-lock"])


def test_bucket_goes_through_the_configured_proxy_and_the_api_server_does_not(bundle: Path, tmp_path: Path) -> None:
    # configured in torcx-tectonic's own file: it reaches the network steps on any systemd
    with Proxy() as proxy:
        settings = {"bootstrap": {"reboot": "no", "upgrade_os": "no"},
                    "network": {"proxy": proxy.url, "no_proxy": "127.0.0.1"}}
        with Cluster(tmp_path, RELEASES) as cluster:
            files = cluster.node_files(settings)
            with Node(bundle=bundle, os_version=CURRENT, files=files) as node:
                node.boot()
                assert start_bootstrap(node).returncode == 0
                assert proxy.tunnelled(f"localhost:{cluster.bucket.port}")
                assert cluster.bucket.requests_for("/addons/")
                assert all(r.via_proxy for r in cluster.bucket.requests_for("/"))
                assert cluster.api.requests_for("/")
                assert not any(r.via_proxy for r in cluster.api.requests_for("/"))
                assert not proxy.used_for_port(cluster.api.port)
                assert store_file(node, CURRENT, "17.03").is_file()
                assert BOARD in cluster.bucket.requests_for("/manifests/")[0].path


def test_second_kubelet_change_during_a_new_kubelet_run_is_not_lost(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        cluster.bucket.set_fault("/addons/", delay=3)  # the first run is still downloading 17.06...
        node.boot()
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
        node.wait_for(lambda: step_done(node, "new-kubelet", "docker-version"), timeout=60, what="first decision")
        # ... when the cluster goes back to 1.8: that trigger merges into the running job.
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.8.5_coreos.0\n")
        def second_run_done() -> bool:
            kube = settled_record(node, "new-kubelet", "kubernetes-version")
            addons = settled_record(node, "new-kubelet", "addons")
            return kube is not None and addons is not None \
                and kube["version"] == "v1.8.5+coreos.0" and addons["version"] == "17.03"

        node.wait_for(second_run_done, timeout=90, what="the second run for v1.8.5")
        assert selected(node) == "17.03"
        assert "changed to Kubernetes v1.8.5+coreos.0 while the flow handled v1.9.1+coreos.0" in node.journal(
            "torcx-new-kubelet-recheck.service")
