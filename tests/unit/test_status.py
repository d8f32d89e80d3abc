"""status: the verdicts (pure), what gather reads from a node's disk, the
operator's command (text, JSON, exit status) and the metrics textfile."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from torcx_tectonic.commands import cli as command
from torcx_tectonic.commands import metrics, status
from torcx_tectonic.commands.status import pinned
from torcx_tectonic.config import Config
from torcx_tectonic.paths import NodePaths
from torcx_tectonic.state import FlowState, ManifestCache, OsVersions, RuntimeChoice, RuntimePin
from torcx_tectonic.torcx import backend as torcx_backend
from torcx_tectonic.verdict import Verdict

from .helpers import make_config, sha512

CURRENT, NEXT = "1632.3.0", "1688.5.3"
ADDON = b"docker 17.03 addon bytes"
MAPPINGS = 'kind: VersionManifestV1\nversions:\n  k8s:\n    "1.8":\n      docker: ["17.03", "1.12"]\n'


def verdict(**changes: Any) -> Verdict:
    facts: dict[str, Any] = {
        "os_version": CURRENT, "runtime": "docker", "kube_version": "v1.8.4+coreos.0", "wanted": ("17.03", "1.12"),
        "mapping_source": "ConfigMap x", "profile_name": "tectonic", "reference": "17.03", "profile_problem": None,
        "location": f"/var/lib/torcx/store/{CURRENT}/docker:17.03.torcx.tgz", "hash_state": torcx_backend.VERIFIED,
        "searched": ("/usr/share/torcx/store", f"/var/lib/torcx/store/{CURRENT}")}
    facts.update(changes)
    return torcx_backend.verdict(**facts)


# --- the pure verdict -------------------------------------------------------------------------------

def test_the_wanted_docker_in_the_right_store_is_ok() -> None:
    result = verdict()
    assert (result.ok, result.runtime_version) == (True, "17.03")
    assert result.reason == (f"docker:17.03 from /var/lib/torcx/store/{CURRENT}/docker:17.03.torcx.tgz, verified; "
                             "Kubernetes v1.8.4+coreos.0 accepts 17.03, 1.12 (ConfigMap x)")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"os_version": None}, "the OS version is not known"),
    ({"profile_problem": "the next profile x exists in neither"}, "the next profile x exists in neither"),
    ({"reference": None}, "profile tectonic selects no docker image"),
    ({"location": None}, "profile tectonic selects docker:17.03, which is in none of the stores OS 1632.3.0 reads "
                         "(/usr/share/torcx/store, /var/lib/torcx/store/1632.3.0)"),
    ({"hash_state": torcx_backend.MISMATCH}, "does not have the sha512 the manifest for OS 1632.3.0 lists"),
    ({"kube_version": None}, "but no Kubernetes version is known"),
    ({"wanted": ()}, "which docker versions Kubernetes v1.8.4+coreos.0 accepts is not known (ConfigMap x)"),
    ({"reference": "1.10"}, "selects docker:1.10, which Kubernetes v1.8.4+coreos.0 does not accept (it accepts "
                            "17.03, 1.12, from ConfigMap x)"),
], ids=["no-os", "profile-problem", "no-image", "missing-addon", "hash", "no-kubernetes", "no-mappings",
        "not-accepted"])
def test_each_reason_a_node_is_not_ok(changes: dict[str, Any], reason: str) -> None:
    result = verdict(**changes)
    assert result.ok is False
    assert reason in result.reason


def test_an_os_before_remote_addons_keeps_its_own_docker() -> None:
    result = verdict(os_version="1465.8.0", location=None)
    assert result.ok is True
    assert "predates remote addons (1520.3.0)" in result.reason


# --- gather on a node's disk ------------------------------------------------------------------------

class Disk:
    """A node's files under a temporary root, with a configuration pointing into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = NodePaths(root)
        self.kube = root / "etc/kubernetes"

    def write(self, path: str | Path, data: str | bytes) -> Path:
        target = self.root / str(path).lstrip("/") if isinstance(path, str) else path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        return target

    def config(self, **settings: str) -> Config:
        return make_config({"kubernetes.kubelet_env": str(self.kube / "kubelet.env"),
                            "kubernetes.installer_kubelet_env": str(self.kube / "installer/kubelet.env"),
                            "kubernetes.runtime_mappings": str(self.kube / "installer/runtime-mappings.yaml"),
                            **settings})

    def healthy(self) -> None:
        self.write("usr/lib/os-release", f"ID=coreos\nVERSION_ID={CURRENT}\nCOREOS_BOARD=amd64-usr\n")
        self.write("etc/kubernetes/kubelet.env", "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
        self.write("etc/kubernetes/installer/runtime-mappings.yaml", MAPPINGS)
        self.write(f"var/lib/torcx/store/{CURRENT}/docker:17.03.torcx.tgz", ADDON)
        self.write("etc/torcx/profiles/tectonic.json", json.dumps(
            {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": "17.03"}]}}))
        self.write("etc/torcx/next-profile", "tectonic\n")
        self.write("usr/share/torcx/profiles/vendor.json", json.dumps(
            {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": "com.coreos.cl"}]}}))

    def manifest(self, os_version: str, digest: bytes = ADDON) -> str:
        raw = json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [{"name": "docker", "versions": [
            {"version": "17.03", "hash": "sha512-" + sha512(digest), "locations": [{"url": "https://b/d.tgz"}]}]}]}})
        return ManifestCache(self.paths.cache_dir).put("amd64-usr", os_version, raw.encode())

    def next_os_recorded(self, flow: str = "new-os") -> FlowState:
        state = FlowState(self.paths, flow, clock=lambda: 1000.0)
        state.begin("os-version")
        state.save(OsVersions(board="amd64-usr", current=CURRENT, next=NEXT, next_source="update_engine"))
        self.write("run/update_engine_autoupdate_completed", "")
        return state


def no_units(units: Sequence[str]) -> dict[str, str]:
    return dict.fromkeys(units, "active")


@pytest.fixture
def disk(tmp_path: Path) -> Disk:
    node = Disk(tmp_path / "node")
    node.healthy()
    return node


def test_a_healthy_node_without_an_update_is_ok_for_both(disk: Disk) -> None:
    disk.manifest(CURRENT)
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert (found.ok, found.current.ok, found.next.ok) == (True, True, True)
    assert (found.board, found.current_os, found.next_os) == ("amd64-usr", CURRENT, None)
    assert found.kube_version == "v1.8.4+coreos.0"
    assert found.wanted == ("17.03", "1.12")
    assert "verified" in found.current.reason
    assert found.next.notes == (f"no OS update pending: the next boot runs OS {CURRENT} again",)
    addons = [a for s in found.view.document["stores"] for a in s["addons"]]
    assert [(a["name"], a["reference"]) for a in addons] == [("docker", "17.03")]
    assert found.path_units == {"torcx-new-os.path": "active", "torcx-new-kubelet.path": "active"}


def test_next_os_without_its_addon_is_not_ok_and_says_where_it_looked(disk: Disk) -> None:
    disk.next_os_recorded()
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.current.ok is True
    assert (found.next_os, found.next.ok) == (NEXT, False)
    assert f"none of the stores OS {NEXT} reads" in found.next.reason
    assert f"/var/lib/torcx/store/{NEXT}" not in found.next.reason  # that store does not exist at all
    assert f"the vendor store of OS {NEXT}" in found.next.reason
    disk.write(f"var/lib/torcx/store/{NEXT}/docker:17.03.torcx.tgz", ADDON)
    assert status.gather(disk.config(), disk.paths, units=no_units).next.ok is True


def test_an_applied_update_whose_version_no_flow_recorded_is_not_ok(disk: Disk) -> None:
    disk.write("run/update_engine_autoupdate_completed", "")
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.next.ok is False
    assert "no flow has recorded its version in this boot" in found.next.reason


def test_a_wrong_hash_in_the_store_is_not_ok(disk: Disk) -> None:
    disk.manifest(CURRENT, digest=b"other bytes")
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.current.ok is False
    assert "does not have the sha512 the manifest" in found.current.reason
    assert status.gather(disk.config(), disk.paths, check_hashes=False, units=no_units).current.ok is True


def test_a_profile_that_names_a_missing_profile(disk: Disk) -> None:
    disk.write("etc/torcx/next-profile", "gone\n")
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.current.ok is False
    assert "the next profile gone exists in neither" in found.current.reason


def test_wanted_versions_come_from_this_boots_runtime_choice_first(disk: Disk) -> None:
    state = disk.next_os_recorded("new-kubelet")
    state.save(RuntimeChoice(runtime="docker", version="17.03", os_versions=(NEXT,), kube_version="v1.8.4+coreos.0",
                             preferred=("17.03",), mapping_source="ConfigMap tectonic-system/m"))
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.wanted == ("17.03",)
    assert found.mapping_source == "ConfigMap tectonic-system/m, as recorded in this boot"


def test_a_fresh_node_says_what_is_missing_without_crashing(tmp_path: Path) -> None:
    empty = Disk(tmp_path / "empty")
    found = status.gather(empty.config(), empty.paths, units=no_units)
    assert found.ok is False
    assert found.current_os is None
    assert any("os-release" in problem for problem in found.problems)
    assert "neither" in found.kube_source
    assert all(flow.run is None for flow in found.flows)


def test_a_pending_docker_reset_and_an_interrupted_run_are_shown(disk: Disk) -> None:
    disk.write("var/lib/torcx-tectonic/docker-reset-needed", '{"from": "1.12", "to": "17.03"}\n')
    state = FlowState(disk.paths, "new-kubelet", clock=lambda: 50.0)
    state.begin("kubelet-version")
    shutil.rmtree(disk.paths.state_dir)  # the node rebooted mid-run: /run is empty again
    found = status.gather(disk.config(), disk.paths, units=no_units)
    assert found.reset_pending == "1.12 → 17.03"
    assert "docker changes at the next boot (1.12 → 17.03)" in found.current.notes[0]
    flow = next(f for f in found.flows if f.flow == "new-kubelet")
    assert (flow.this_boot, flow.interrupted) == (False, True)


# --- the command ------------------------------------------------------------------------------------

def run_command(disk: Disk, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("torcx_tectonic.config.load", lambda: disk.config())
    monkeypatch.setattr("torcx_tectonic.node.systemd.unit_states", no_units)
    monkeypatch.setattr(command, "gather", lambda config, paths: status.gather(config, paths, units=no_units))
    code = command.main(list(argv), paths=disk.paths)
    return code, capsys.readouterr().out


def test_status_text_leads_with_the_answer_and_exits_0_when_healthy(disk: Disk, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_command(disk, monkeypatch, capsys, "status")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("will this node boot with the docker its Kubernetes needs? yes")
    assert lines[2].startswith(f"  running OS {CURRENT}: ok: docker:17.03 from ")
    assert "flows (last run)" in out and "never ran on this node" in out


def test_status_json_is_a_versioned_document_and_exits_1_when_not_ok(disk: Disk, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    disk.next_os_recorded()
    code, out = run_command(disk, monkeypatch, capsys, "status", "--json")
    assert code == 1
    document = json.loads(out)
    assert document["kind"] == "torcx-tectonic-status-v1"
    assert document["os"] == {"board": "amd64-usr", "current": CURRENT, "next": NEXT,
                              "next_source": "update_engine, as recorded in this boot"}
    assert document["kubernetes"]["version"] == "v1.8.4+coreos.0"
    assert document["runtime"]["name"] == "docker" and document["runtime"]["wanted"] == ["17.03", "1.12"]
    assert document["verdict"]["current"]["ok"] is True
    assert document["verdict"]["next"]["ok"] is False
    assert document["verdict"]["next"]["runtime_version"] == "17.03"
    assert document["flows"]["new-os"]["last_run"]["result"] == "running"


def test_status_usage_error_exits_2(disk: Disk, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_command(disk, monkeypatch, capsys, "status", "--bogus")
    assert exited.value.code == 2


# --- metrics -----------------------------------------------------------------------------------------

def test_metrics_parse_as_the_prometheus_text_format(disk: Disk) -> None:
    disk.next_os_recorded()
    written = metrics.write(disk.root / "textfile", status.gather(disk.config(), disk.paths, units=no_units))
    families = {f.name: f for f in text_string_to_metric_families(written.read_text())}  # type: ignore[no-untyped-call]
    ok = {s.labels["os"]: s.value for s in families["torcx_tectonic_verdict_ok"].samples}
    assert ok == {"current": 1.0, "next": 0.0}
    results = {(s.labels["flow"], s.labels["result"]): s.value
               for s in families["torcx_tectonic_last_run_result"].samples}
    assert results[("new-os", "running")] == 1.0 and results[("new-os", "ok")] == 0.0
    started = {s.labels["flow"]: s.value for s in families["torcx_tectonic_last_run_start_timestamp_seconds"].samples}
    assert started == {"new-os": 1000.0}
    assert [p.name for p in written.parent.iterdir()] == ["torcx_tectonic.prom"]


def test_label_values_are_quoted_as_the_text_format_wants() -> None:
    tricky = 'a "quoted" \\ back\nslash'
    text = "\n".join(metrics._family("x", "help with \\ a backslash", [({"v": tricky}, 2)])) + "\n"
    (family,) = list(text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
    assert family.documentation == "help with \\ a backslash"
    assert [(s.labels, s.value) for s in family.samples] == [({"v": tricky}, 2.0)]


@pytest.mark.parametrize(
    ("verdict", "pin", "ok", "says"),
    [
        (Verdict("1688.5.3", True, "17.03", "fine"), RuntimePin(None, "no pin"), True, "fine"),
        (Verdict("1688.5.3", True, "1.12", "fine"), RuntimePin("1.12", "the annotation"), True, "fine"),
        (Verdict("1688.5.3", True, "17.03", "fine"), RuntimePin("1.12", "the annotation"), False,
         "docker is pinned to 1.12 (the annotation); OS 1688.5.3 would run 17.03: fine"),
        (Verdict("1688.5.3", False, None, "unreadable profile"), RuntimePin("1.12", "the annotation"), False,
         "docker is pinned to 1.12 (the annotation); OS 1688.5.3 would run no known version: unreadable profile"),
        (Verdict("1688.5.3", False, "1.12", "in none of the stores"), RuntimePin("1.12", "the annotation"), False,
         "docker is pinned to 1.12 (the annotation); OS 1688.5.3 would run 1.12: in none of the stores"),
        (Verdict(None, False, None, "unknown"), RuntimePin("1.12", "the annotation"), False, "unknown"),
    ],
    ids=["no-pin", "pinned-and-there", "pinned-elsewhere", "pinned-and-unknown", "pinned-and-missing", "os-unknown"],
)
def test_a_pin_decides_the_verdict(verdict: Verdict, pin: RuntimePin, ok: bool, says: str) -> None:
    found = pinned(verdict, pin, "docker")
    assert (found.ok, found.reason) == (ok, says)
    assert ("pinned to 1.12 (the annotation)" in found.notes) == (ok and pin.version is not None)
