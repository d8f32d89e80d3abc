"""steps: the orchestration of one unit's work, with the node's paths moved into a temporary root."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from torcx_tectonic import steps, updateengine
from torcx_tectonic.errors import ConfigError, InputError, TorcxTectonicError, VerificationError
from torcx_tectonic.facts import Facts
from torcx_tectonic.osrelease import OSRelease
from torcx_tectonic.steps import Context

from .helpers import make_config, sha512

ADDON = b"docker 17.03 torcx tarball" * 100


class Node:
    """A node's torcx-related paths under a temporary root, patched into steps."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.user_store = root / "var/lib/torcx/store"
        self.vendor_store = root / "usr/share/torcx/store"
        self.user_profiles = root / "etc/torcx/profiles"
        self.vendor_profiles = root / "usr/share/torcx/profiles"
        self.next_profile = root / "etc/torcx/next-profile"
        self.metadata = root / "run/metadata/torcx"
        self.reset_marker = root / "var/lib/torcx-tectonic/docker-reset-needed"
        self.finish_pending = root / "run/torcx-tectonic/bootstrap/finish-pending"
        for name, value in (("USER_STORE", self.user_store), ("VENDOR_STORE", self.vendor_store),
                            ("USER_PROFILES", self.user_profiles), ("VENDOR_PROFILES", self.vendor_profiles),
                            ("NEXT_PROFILE", self.next_profile), ("TORCX_METADATA", self.metadata),
                            ("DOCKER_RESET_MARKER", self.reset_marker),
                            ("BOOTSTRAP_FINISH_PENDING", self.finish_pending)):
            monkeypatch.setattr(steps, name, value)
        self.vendor_profiles.mkdir(parents=True)
        (self.vendor_profiles / "vendor.json").write_text(json.dumps(
            {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": "com.coreos.cl"}]}}))
        self.enabled: list[str] = []
        monkeypatch.setattr("torcx_tectonic.systemd.enable", self._enable)

    def _enable(self, unit: str) -> bool:
        self.enabled.append(unit)
        return True

    def snapshot(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


class FakeBucket:
    """Stands in for bucket.Bucket: serves addon bytes by URL and counts downloads."""

    files: ClassVar[dict[str, bytes]] = {}
    downloads: ClassVar[list[str]] = []

    def __init__(self, config: Any) -> None:
        pass

    def __enter__(self) -> FakeBucket:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def download(self, url: str, what: str) -> Iterator[bytes]:
        FakeBucket.downloads.append(url)
        yield FakeBucket.files[url]


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Node:
    FakeBucket.files = {"https://bucket/docker:17.03.torcx.tgz": ADDON}
    FakeBucket.downloads = []
    monkeypatch.setattr(steps, "Bucket", FakeBucket)
    return Node(tmp_path / "node", monkeypatch)


def _context(tmp_path: Path, flow: str = "new-os", **settings: str) -> Context:
    return Context(make_config(settings), Facts(flow, root=tmp_path / "facts"))


def _manifest(*locations: dict[str, str], digest: bytes = ADDON) -> bytes:
    return json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [{"name": "docker", "versions": [
        {"version": "17.03", "hash": "sha512-" + sha512(digest), "locations": list(locations)}]}]}}).encode()


def _plan(ctx: Context, current: str, upcoming: str | None, os_versions: list[str],
          manifests: dict[str, bytes]) -> None:
    ctx.facts.record("next-os", "ok", current_os=current, next_os=upcoming, board="amd64-usr")
    ctx.facts.record("docker-version", "ok", plan={"version": "17.03", "os_versions": os_versions})
    for os_version, raw in manifests.items():
        steps.manifest_blob(ctx.facts, os_version).write_bytes(raw)


URL = {"url": "https://bucket/docker:17.03.torcx.tgz"}


# --- install-addons --------------------------------------------------------------------------------

def test_install_addons_downloads_for_both_os_and_selects_the_profile(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", "1688.5.3", ["1688.5.3", "1632.3.0"],
          {"1688.5.3": _manifest(URL), "1632.3.0": _manifest(URL)})
    record = steps.install_addons(ctx)
    assert [(i["os"], i["action"]) for i in record["installed"]] == [("1688.5.3", "downloaded"),
                                                                     ("1632.3.0", "downloaded")]
    for version in ("1688.5.3", "1632.3.0"):
        assert (node.user_store / version / "docker:17.03.torcx.tgz").read_bytes() == ADDON
    assert json.loads((node.user_profiles / "tectonic.json").read_text())["value"]["images"] == [
        {"name": "docker", "reference": "17.03"}]
    assert node.next_profile.read_text() == "tectonic\n"
    assert (record["docker_changed"], record["previous_docker"], record["docker"]) == (True, "com.coreos.cl", "17.03")
    assert json.loads(node.reset_marker.read_text()) == {"from": "com.coreos.cl", "to": "17.03"}
    assert node.enabled == ["torcx-tectonic-docker-reset.service"]


def test_install_addons_twice_downloads_and_rewrites_nothing(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", "1688.5.3", ["1688.5.3"], {"1688.5.3": _manifest(URL)})
    steps.install_addons(ctx)
    before = node.snapshot()
    record = steps.install_addons(ctx)
    assert FakeBucket.downloads == ["https://bucket/docker:17.03.torcx.tgz"]
    assert [i["action"] for i in record["installed"]] == ["present"]
    assert record["changed"] == []
    assert node.snapshot() == before


def test_vendor_addon_of_the_next_os_is_not_copied(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    vendor = {"path": str(node.vendor_store / "docker:17.03.torcx.tgz")}
    _plan(ctx, "1632.3.0", "1688.5.3", ["1688.5.3"], {"1688.5.3": _manifest(vendor, URL)})
    record = steps.install_addons(ctx)
    assert record["installed"] == [{"os": "1688.5.3", "action": "vendor", "path": vendor["path"]}]
    assert FakeBucket.downloads == []
    assert not node.user_store.exists()


def test_vendor_addon_of_the_running_os_is_checked_and_downloaded_when_absent(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    vendor = {"path": str(node.vendor_store / "docker:17.03.torcx.tgz")}
    _plan(ctx, "1632.3.0", None, ["1632.3.0"], {"1632.3.0": _manifest(vendor, URL)})
    assert steps.install_addons(ctx)["installed"][0]["action"] == "downloaded"
    node.vendor_store.mkdir(parents=True)
    (node.vendor_store / "docker:17.03.torcx.tgz").write_bytes(ADDON)
    assert steps.install_addons(ctx)["installed"][0]["action"] == "vendor"


def test_wrong_hash_installs_nothing_and_leaves_the_profile_alone(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", "1688.5.3", ["1688.5.3"], {"1688.5.3": _manifest(URL, digest=b"something else")})
    before = node.snapshot()
    with pytest.raises(VerificationError, match="sha512 mismatch for docker:17.03.torcx.tgz"):
        steps.install_addons(ctx)
    assert node.snapshot() == before
    assert node.enabled == []


def test_addon_without_url_or_vendor_copy(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", None, ["1632.3.0"], {"1632.3.0": _manifest({"path": "/opt/docker.tgz"})})
    with pytest.raises(InputError, match="manifest for OS 1632.3.0: docker 17.03 has no url and is not in the vendor"):
        steps.install_addons(ctx)


def test_no_plan_installs_nothing(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.facts.record("next-os", "ok", current_os="1465.8.0", next_os=None, board="amd64-usr")
    ctx.facts.record("docker-version", "ok", plan=None)
    assert steps.install_addons(ctx) == {"installed": [], "docker_changed": False}
    assert node.snapshot() == {"usr/share/torcx/profiles/vendor.json": (node.vendor_profiles / "vendor.json")
                               .read_bytes()}


def test_docker_version_before_the_addon_epoch_needs_no_bucket(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.facts.record("next-os", "ok", current_os="1465.8.0", next_os=None, board="amd64-usr")
    ctx.facts.record("kubelet-version", "ok", kube_version="v1.8.4+coreos.0")
    assert steps.docker_version(ctx) == {"plan": None, "reason": "OS older than 1520.3.0"}


def test_a_step_needs_its_predecessors(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    with pytest.raises(TorcxTectonicError, match="step new-os/next-os has not run in this boot"):
        steps.docker_version(ctx)


# --- kubelet version and kubelet.env ---------------------------------------------------------------

def test_forced_kubelet_version(tmp_path: Path) -> None:
    ctx = _context(tmp_path, **{"kubernetes.force_version": "v1.8.4+coreos.0"})
    assert steps.kubelet_version(ctx, "cluster") == {"kube_version": "v1.8.4+coreos.0",
                                                     "source": "[kubernetes] force_version"}


def test_forced_kubelet_version_must_be_a_version(tmp_path: Path) -> None:
    # checked when the configuration is read, so no step ever sees it
    with pytest.raises(ConfigError, match="force_version = 'latest': expected a Kubernetes version"):
        _context(tmp_path, **{"kubernetes.force_version": "latest"})


def test_kubelet_version_from_kubelet_env(tmp_path: Path) -> None:
    env = tmp_path / "kubelet.env"
    env.write_text("KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    ctx = _context(tmp_path, **{"kubernetes.kubelet_env": str(env)})
    assert steps.kubelet_version(ctx, "kubelet-env") == {"kube_version": "v1.9.1+coreos.0", "source": str(env)}


def test_kubelet_version_without_kubeconfig_uses_the_installer_file(tmp_path: Path) -> None:
    installer = tmp_path / "installer.env"
    installer.write_text("KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    ctx = _context(tmp_path, **{"kubernetes.kubeconfig": str(tmp_path / "missing"),
                                "kubernetes.installer_kubelet_env": str(installer)})
    assert steps.kubelet_version(ctx, "cluster") == {"kube_version": "v1.8.4+coreos.0", "source": str(installer)}


def _kubelet_env_context(tmp_path: Path, template: str | None) -> Context:
    installer, target = tmp_path / "installer" / "kubelet.env", tmp_path / "kubernetes" / "kubelet.env"
    if template is not None:
        installer.parent.mkdir()
        installer.write_text(template)
    ctx = _context(tmp_path, "bootstrap", **{"kubernetes.installer_kubelet_env": str(installer),
                                             "kubernetes.kubelet_env": str(target)})
    ctx.facts.record("kubelet-version", "ok", kube_version="v1.8.4+coreos.0")
    return ctx


def test_kubelet_env_is_written_from_the_installer_copy_once(node: Node, tmp_path: Path) -> None:
    ctx = _kubelet_env_context(tmp_path, "# installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n"
                                         "KUBELET_IMAGE_TAG=v1.8.0_coreos.0\n")
    target = ctx.config.kubernetes.kubelet_env
    assert steps.kubelet_env(ctx)["written"] is True
    assert target.read_text() == ("# installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n"
                                  "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    assert node.finish_pending.exists()
    mtime = target.stat().st_mtime_ns
    assert steps.kubelet_env(ctx)["written"] is False
    assert target.stat().st_mtime_ns == mtime


@pytest.mark.parametrize(("template", "expected"), [
    (None, "installer/kubelet.env: missing; expected the installer's kubelet.env"),
    ("KUBELET_IMAGE_TAG=v1\nbroken line\n", "installer/kubelet.env:2: expected KEY=value"),
], ids=["missing", "malformed"])
def test_bad_installer_kubelet_env_writes_nothing(node: Node, tmp_path: Path, template: str | None,
                                                  expected: str) -> None:
    ctx = _kubelet_env_context(tmp_path, template)
    with pytest.raises(InputError, match=expected):
        steps.kubelet_env(ctx)
    assert not ctx.config.kubernetes.kubelet_env.exists()
    assert not node.finish_pending.exists()


# --- gc -------------------------------------------------------------------------------------------

def test_gc_step_removes_stores_older_than_the_running_os(node: Node, tmp_path: Path) -> None:
    for version in ("1576.4.0", "1632.3.0", "1688.5.3"):
        (node.user_store / version).mkdir(parents=True)
    ctx = _context(tmp_path)
    ctx.facts.record("next-os", "ok", current_os="1632.3.0", next_os="1688.5.3", board="amd64-usr")
    assert steps.gc_stores(ctx) == {"removed": ["1576.4.0"]}
    assert sorted(p.name for p in node.user_store.iterdir()) == ["1632.3.0", "1688.5.3"]


# --- next-os ----------------------------------------------------------------------------------------

class FakeEngine:
    """update_engine as the steps see it: scripted attempts, a status, resets counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, attempts: list[Any], status: Any = None) -> None:
        self.attempts, self.status, self.resets = list(attempts), status, 0
        monkeypatch.setattr("torcx_tectonic.updateengine.attempt_update", self.attempt_update)
        monkeypatch.setattr("torcx_tectonic.updateengine.get_status", self.get_status)
        monkeypatch.setattr("torcx_tectonic.updateengine.reset_status", self.reset_status)
        monkeypatch.setattr("torcx_tectonic.osrelease.read_os_release",
                            lambda: OSRelease("1632.3.0", "amd64-usr"))

    def attempt_update(self, timeout: float) -> Any:
        result = self.attempts.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def get_status(self) -> Any:
        if isinstance(self.status, Exception):
            raise self.status
        return self.status

    def reset_status(self) -> None:
        self.resets += 1


def _status(operation: str, version: str = "") -> Any:
    return updateengine.Status(0, 1.0, operation, version, 0)


UPDATED = (updateengine.Outcome.UPDATED, _status(updateengine.NEED_REBOOT, "1688.5.3"))
NO_UPDATE = (updateengine.Outcome.NO_UPDATE, _status(updateengine.IDLE))
FAILED = (updateengine.Outcome.FAILED, _status(updateengine.IDLE))


def test_bootstrap_update_installs_the_next_os(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [UPDATED])
    record = steps.next_os(_context(tmp_path, "bootstrap"), attempt=True)
    assert (record["current_os"], record["next_os"], record["update"]) == ("1632.3.0", "1688.5.3", "updated")


def test_bootstrap_without_update_stays_on_the_running_os(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [NO_UPDATE])
    record = steps.next_os(_context(tmp_path, "bootstrap"), attempt=True)
    assert (record["next_os"], record["update"], record["update_failures"]) == (None, "no-update", [])


def test_failed_updates_are_retried_then_the_running_os_is_kept(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, updateengine.UpdateEngineError("D-Bus gone"), FAILED])
    record = steps.next_os(_context(tmp_path, "bootstrap"), attempt=True)
    assert (record["next_os"], record["update"]) == (None, "failed")
    assert len(record["update_failures"]) == 3
    assert "D-Bus gone" in record["update_failures"][1]
    assert "OS update failed 3 time(s)" in record["warning"]
    assert "continuing on the running OS 1632.3.0" in record["warning"]
    assert engine.resets == 3 and engine.attempts == []


def test_a_later_attempt_may_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, UPDATED])
    record = steps.next_os(_context(tmp_path, "bootstrap"), attempt=True)
    assert (record["next_os"], record["update"], len(record["update_failures"])) == ("1688.5.3", "updated", 1)
    assert engine.resets == 1


def test_failed_updates_fail_the_step_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [FAILED, FAILED])
    ctx = _context(tmp_path, "bootstrap", **{"bootstrap.os_update_failure": "fail",
                                             "bootstrap.os_update_attempts": "2"})
    with pytest.raises(TorcxTectonicError) as caught:
        steps.next_os(ctx, attempt=True)
    message = str(caught.value)
    assert message.startswith("OS update failed 2 time(s)")
    assert "set [bootstrap] os_update_failure=continue to go on" in message


@pytest.mark.parametrize(("status", "expected"), [
    (_status(updateengine.NEED_REBOOT, "1688.5.3"), "1688.5.3"),
    (_status(updateengine.NEED_REBOOT, "1632.3.0"), None),
    (_status("UPDATE_STATUS_DOWNLOADING", "1688.5.3"), None),
], ids=["pending", "pending-is-current", "not-finished"])
def test_new_os_reads_the_pending_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: Any,
                                         expected: str | None) -> None:
    FakeEngine(monkeypatch, [], status=status)
    assert steps.next_os(_context(tmp_path, "new-os"), attempt=False)["next_os"] == expected


def test_pending_version_must_be_an_os_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=_status(updateengine.NEED_REBOOT, "../1688.5.3"))
    with pytest.raises(InputError, match="update_engine new_version: OS version '../1688.5.3' is not"):
        steps.next_os(_context(tmp_path, "new-os"), attempt=False)


def test_unreachable_update_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=updateengine.UpdateEngineError("update_engine GetStatus failed"))
    with pytest.raises(updateengine.UpdateEngineError):
        steps.next_os(_context(tmp_path, "new-os"), attempt=False)
    # bootstrap with upgrade_os=no carries on without a pending update
    assert steps.next_os(_context(tmp_path, "bootstrap"), attempt=False)["next_os"] is None


# --- annotate-node ------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class FakeKube:
    """The api-server as annotate_node sees it: the node gets the label after some looks."""

    def __init__(self, label_after: int | None, label: str) -> None:
        self.label_after, self.label, self.looks = label_after, label, 0
        self.annotations: list[tuple[str, dict[str, str]]] = []
        self.labels_when_annotated: list[dict[str, str]] = []

    def __enter__(self) -> FakeKube:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _labels(self) -> dict[str, str]:
        return {self.label: "true"} if self.label_after is not None and self.looks > self.label_after else {}

    def node(self, name: str) -> dict[str, Any]:
        self.looks += 1
        return {"metadata": {"labels": self._labels()}}

    def annotate_node(self, name: str, annotations: dict[str, str]) -> dict[str, Any]:
        self.annotations.append((name, dict(annotations)))
        self.labels_when_annotated.append(self._labels())
        return {}


def _annotate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label_after: int | None,
              **settings: str) -> tuple[FakeKube, FakeClock, Context]:
    prefix = settings.get("kubernetes.annotation", "container-linux-update.v1.coreos.com/x").rpartition("/")[0]
    kube, clock = FakeKube(label_after, f"{prefix}/before-reboot"), FakeClock()
    monkeypatch.setattr(steps, "_client", lambda config: kube)
    monkeypatch.setattr(steps, "time", clock)
    monkeypatch.setattr(steps, "LOCK_FILE", tmp_path / "lock")
    ctx = _context(tmp_path, "new-os", **settings)
    ctx.facts.record("install-addons", "ok")
    return kube, clock, ctx


def test_annotation_is_written_only_once_the_label_is_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, clock, ctx = _annotate(tmp_path, monkeypatch, label_after=6,
                                 **{"kubernetes.label_poll_max_interval": "5",
                                    "kubernetes.annotation": "flatcar-linux-update.v1.flatcar-linux.net/hook-ok"})
    record = steps.annotate_node(ctx)
    assert clock.pauses == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert kube.annotations == [("node-1", {"flatcar-linux-update.v1.flatcar-linux.net/hook-ok": "true"})]
    assert kube.labels_when_annotated == [{"flatcar-linux-update.v1.flatcar-linux.net/before-reboot": "true"}]
    assert record == {"node": "node-1", "annotation": "flatcar-linux-update.v1.flatcar-linux.net/hook-ok",
                      "label": "flatcar-linux-update.v1.flatcar-linux.net/before-reboot"}


def test_no_label_in_time_fails_without_annotating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, clock, ctx = _annotate(tmp_path, monkeypatch, label_after=None, **{"kubernetes.label_timeout": "20"})
    with pytest.raises(TorcxTectonicError) as caught:
        steps.annotate_node(ctx)
    assert str(caught.value) == ("node node-1 did not get the label "
                                 "container-linux-update.v1.coreos.com/before-reboot=true within 20s")
    assert kube.annotations == []
    assert clock.now <= 20


def test_annotation_needs_the_addons_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kube, _, _ = _annotate(tmp_path, monkeypatch, label_after=0)
    ctx = _context(tmp_path / "fresh", "new-os")
    with pytest.raises(TorcxTectonicError, match="step new-os/install-addons has not run"):
        steps.annotate_node(ctx)
    assert kube.looks == 0 and kube.annotations == []


@pytest.mark.parametrize("flow", ["bootstrap", "new-os"])
def test_an_applied_update_of_unknown_version_fails_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            flow: str) -> None:
    # update_engine reports 0.0.0.0 after a restart with the update applied: the
    # next OS cannot be prepared, so the step must not pretend there is no update.
    FakeEngine(monkeypatch, [(updateengine.Outcome.UPDATED, _status(updateengine.NEED_REBOOT, "0.0.0.0"))],
               status=_status(updateengine.NEED_REBOOT, "0.0.0.0"))
    with pytest.raises(TorcxTectonicError, match="applied an OS update but reports its version as '0.0.0.0'"):
        steps.next_os(_context(tmp_path, flow), attempt=flow == "bootstrap")


@pytest.mark.parametrize(("now", "rerun"), [("v1.9.1_coreos.0", False), ("v1.10.0_coreos.0", True)])
def test_recheck_runs_the_flow_again_only_when_kubelet_env_moved_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    now: str, rerun: bool) -> None:
    kubelet_env = tmp_path / "kubelet.env"
    kubelet_env.write_text(f"KUBELET_IMAGE_TAG={now}\n")
    started: list[str] = []
    monkeypatch.setattr("torcx_tectonic.systemd.start", started.append)
    ctx = _context(tmp_path, "new-kubelet", **{"kubernetes.kubelet_env": str(kubelet_env)})
    ctx.facts.record("kubelet-version", "ok", kube_version="v1.9.1+coreos.0")
    record = steps.recheck_kubelet(ctx, "torcx-new-kubelet-addons.service")
    assert record["rerun"] is rerun
    assert started == (["torcx-new-kubelet-addons.service"] if rerun else [])


def _booted(node: Node, reference: str) -> None:
    applied = node.root / "run/torcx/profile.json"
    applied.parent.mkdir(parents=True, exist_ok=True)
    applied.write_text(json.dumps({"kind": "profile-manifest-v0",
                                   "value": {"images": [{"name": "docker", "reference": reference}]}}))
    node.metadata.parent.mkdir(parents=True, exist_ok=True)
    node.metadata.write_text(f"TORCX_UPPER_PROFILE=\"tectonic\"\nTORCX_PROFILE_PATH=\"{applied}\"\n")


def test_a_pending_reset_is_dropped_when_the_booted_docker_is_selected_again(node: Node, tmp_path: Path) -> None:
    # 17.06 was selected (reset arranged), then the kubelet went back before any reboot
    _booted(node, "17.03")
    node.reset_marker.parent.mkdir(parents=True)
    node.reset_marker.write_text('{"from": "17.03", "to": "17.06"}\n')
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", None, ["1632.3.0"], {"1632.3.0": _manifest(URL)})
    record = steps.install_addons(ctx)
    assert (record["docker_changed"], record["previous_docker"]) == (False, "17.03")
    assert not node.reset_marker.exists()


def test_a_pending_reset_stays_when_torcx_left_no_record(node: Node, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    _plan(ctx, "1632.3.0", None, ["1632.3.0"], {"1632.3.0": _manifest(URL)})
    steps.install_addons(ctx)
    assert node.reset_marker.exists()
    steps.install_addons(ctx)  # the next profile now names 17.03: that is not what booted
    assert json.loads(node.reset_marker.read_text()) == {"from": "com.coreos.cl", "to": "17.03"}
