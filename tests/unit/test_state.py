"""state: typed, versioned step records, the run record and the manifest cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from torcx_tectonic import state as st
from torcx_tectonic.state import (
    FAILED,
    OK,
    REBOOTING,
    RECORDS,
    RUNNING,
    AddonPlacement,
    AddonsInstalled,
    ApiServerUnreachable,
    BootstrapFinished,
    DockerReset,
    ExtensionInstalled,
    FlowState,
    KubeletEnvWritten,
    KubeletFollowed,
    KubeletImageChoice,
    KubeletImageInstalled,
    KubeletRechecked,
    KubernetesVersion,
    ManifestCache,
    NodeAnnotated,
    NodeLabelled,
    OsVersions,
    Record,
    RolledBack,
    Run,
    RuntimeChoice,
    RuntimePin,
    StateError,
    StepRun,
    StoresCollected,
    load_run,
)

from .stepenv import StepEnv

#: One record of each type, every field set away from its default.
SAMPLES: tuple[Record, ...] = (
    OsVersions(board="amd64-usr", current="1632.3.0", next="1688.5.3", next_source="update_engine",
               update="failed", update_failures=("timeout", "error event"), warning="continuing on 1632.3.0"),
    KubernetesVersion(version="v1.8.4+coreos.0", source="api-server https://k8s:443"),
    RuntimeChoice(runtime="docker", version="17.03", os_versions=("1688.5.3", "1632.3.0"),
                  kube_version="v1.8.4+coreos.0", preferred=("17.03", "1.12"), mapping_source="ConfigMap x/y",
                  offered={"1688.5.3": ("17.03", "1.12"), "1632.3.0": ()}, manifests={"1688.5.3": "ab" * 32},
                  reason="because"),
    AddonsInstalled(runtime="docker", version="17.03", placements=(
        AddonPlacement(os="1688.5.3", action="downloaded", path="/var/lib/torcx/store/1688.5.3/d.tgz",
                       url="https://b/d.tgz", bytes=1234),
        AddonPlacement(os="1632.3.0", action="linked", path="/var/lib/torcx/store/1632.3.0/d.tgz")),
        profile="tectonic", changed_files=("/etc/torcx/next-profile",), previous="com.coreos.cl",
        runtime_changed=True),
    KubeletEnvWritten(path="/etc/kubernetes/kubelet.env", written=True, kube_version="v1.8.4+coreos.0"),
    BootstrapFinished(kubelet_enabled=True, reboot=True, reboot_reasons=("OS 1688.5.3 is installed",),
                      already_finished=True),
    StoresCollected(current_os="1632.3.0", removed=("1576.4.0", "1520.3.0")),
    NodeAnnotated(node="node-1", annotation="p/hook-ok", label="p/before-reboot"),
    KubeletRechecked(used="v1.8.4+coreos.0", now="v1.9.1+coreos.0", rerun=True),
    DockerReset(removed=("image", "overlay2"), booted="17.03"),
    ExtensionInstalled(runtime="docker", version="24.0.9", image="/opt/extensions/docker/docker-24.0.9-x86-64.raw",
                       link="/etc/extensions/docker.raw", action="downloaded", bytes=4096, previous="20.10.24",
                       runtime_changed=True, fits={"3815.2.0": "SYSEXT_LEVEL=1.0 matches"},
                       activated="at the next boot"),
    ApiServerUnreachable(server="https://k8s:443", reason="api-server version: connection refused",
                         step="kubelet-version"),
    NodeLabelled(node="node-1", labels={"torcx-tectonic.io/runtime": None, "torcx-tectonic.io/next-boot": "ok"},
                 annotations={"torcx-tectonic.io/reason": "docker:17.03 from /var/lib/torcx/store"}),
    RuntimePin(version="1.12", source="node node-1 annotation torcx-tectonic.io/pin-runtime"),
    RolledBack(runtime="docker", version="17.03", previous="17.06", found=("/var/lib/torcx/store/d.tgz (OS 1)",),
               reset="17.06 → 17.03", activated="at the next boot", runtime_changed=False),
    KubeletImageChoice(name="kubernetes", version="v1.30.4", target="v1.30.4", reason="the api-server's version",
                       current="v1.29.8", offered=("v1.29.8", "v1.30.4"), manifests={"SHA256SUMS": "ab" * 32},
                       managed_by="/etc/sysupdate.d/kubernetes.conf"),
    KubeletImageInstalled(runtime="kubernetes", version="v1.30.4",
                          image="/opt/extensions/kubernetes/kubernetes-v1.30.4-x86-64.raw",
                          link="/etc/extensions/kubernetes.raw", action="downloaded", bytes=8192, previous="v1.29.8",
                          runtime_changed=True, fits={"3815.2.0": "SYSEXT_LEVEL=1.0 matches"}, activated="now",
                          managed_by="/etc/sysupdate.kubernetes.d/kubernetes.conf"),
    KubeletFollowed(api_server="v1.31.2", before="v1.30.4", after="v1.31.0", reason="one minor at a time"),
)


def _record_file(state: FlowState, cls: type[Record]) -> Path:
    return state.records_dir / f"{cls.NAME}.json"


def _rewrite(path: Path, change: dict[str, object]) -> None:
    """Change the value of a record file in place (as another program might)."""
    document = json.loads(path.read_text())
    document["value"].update(change)
    path.write_text(json.dumps(document))


# --- the records -------------------------------------------------------------------------------

def test_the_samples_cover_every_record_type() -> None:
    assert sorted(type(s).NAME for s in SAMPLES) == sorted(RECORDS)
    for sample in SAMPLES:
        assert dataclasses.is_dataclass(sample)
        defaults = [f.name for f in dataclasses.fields(sample)
                    if f.default is not dataclasses.MISSING and getattr(sample, f.name) == f.default]
        assert defaults == [], f"{type(sample).__name__} sample leaves {defaults} at their defaults"


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: type(r).NAME)
def test_every_record_round_trips_through_save_and_load(env: StepEnv, record: Record) -> None:
    state = env.begin("new-os")
    state.save(record)
    assert state.load(type(record)) == record
    document = json.loads(_record_file(state, type(record)).read_text())
    assert document["kind"] == f"torcx-tectonic.{type(record).NAME}.v1"
    assert (document["flow"], document["run"]) == ("new-os", state.current().id)


def test_kinds_are_versioned_and_unique() -> None:
    kinds = [cls.KIND for cls in RECORDS.values()]
    assert len(set(kinds)) == len(kinds)
    assert all(k.startswith("torcx-tectonic.") and k.endswith(".v1") for k in kinds)


def test_loading_a_record_that_was_not_saved_names_the_file(env: StepEnv) -> None:
    state = env.begin("new-os")
    with pytest.raises(StateError) as caught:
        state.load(RuntimeChoice)
    path = _record_file(state, RuntimeChoice)
    assert str(caught.value) == (f"flow new-os: no runtime-choice recorded in this run ({path} is missing): "
                                 "the step that decides it has not run")


def test_a_record_of_an_earlier_run_is_not_this_runs(env: StepEnv) -> None:
    state = env.begin("new-os", KubernetesVersion("v1.8.4+coreos.0", "x"))
    state.begin("os-version")  # a new run of the flow, in the same boot
    with pytest.raises(StateError, match=r"kubernetes-version\.json: recorded by an earlier run of flow new-os, "
                                         "not by this one"):
        state.load(KubernetesVersion)


def test_records_are_kept_per_flow(env: StepEnv) -> None:
    env.begin("new-os", KubernetesVersion("v1.8.4+coreos.0", "x"))
    other = env.begin("new-kubelet")
    with pytest.raises(StateError, match="flow new-kubelet: no kubernetes-version recorded"):
        other.load(KubernetesVersion)


def test_loading_without_a_run_in_this_boot_fails(env: StepEnv) -> None:
    with pytest.raises(StateError, match="flow new-os has no run in this boot; its first step begins one"):
        env.state("new-os").load(OsVersions)


# A valid os-versions value, to break one way at a time.
GOOD_VALUE = {"board": "amd64-usr", "current": "1632.3.0", "next": None, "next_source": "x"}


def _document(state: FlowState, value: object, kind: str = OsVersions.KIND) -> str:
    return json.dumps({"kind": kind, "flow": state.flow, "run": state.current().id, "time": 1.0, "value": value})


@pytest.mark.parametrize(("content", "expected"), [
    (lambda s: "{not json", "not JSON; expected the os-versions record of flow new-os (torcx-tectonic.os-versions.v1)"),
    (lambda s: b'{"kind": "\xff"}', "not JSON; expected the os-versions record"),
    (lambda s: "[" * 100_000 + "]" * 100_000, "not JSON; expected the os-versions record"),
    (lambda s: '["kind", "torcx-tectonic.os-versions.v1"]',
     "kind is None, written by something else; expected torcx-tectonic.os-versions.v1"),
    (lambda s: _document(s, GOOD_VALUE, kind="torcx-package-list-v0"),
     "kind is 'torcx-package-list-v0', written by something else; expected torcx-tectonic.os-versions.v1"),
    (lambda s: _document(s, GOOD_VALUE, kind="torcx-tectonic.os-versions.v0"),
     "kind is 'torcx-tectonic.os-versions.v0', written by another version of torcx-tectonic; "
     "expected torcx-tectonic.os-versions.v1 (run the flow again to replace it)"),
    (lambda s: _document(s, GOOD_VALUE, kind=KubernetesVersion.KIND),
     "kind is 'torcx-tectonic.kubernetes-version.v1', written by another version"),
    (lambda s: _document(s, {**GOOD_VALUE, "current": 1632}), "value.current: expected a str, found int"),
    (lambda s: _document(s, {**GOOD_VALUE, "next": ["1688.5.3"]}), "value.next: expected a str, found list"),
    (lambda s: _document(s, {**GOOD_VALUE, "update_failures": "boom"}),
     "value.update_failures: expected a list, found str"),
    (lambda s: _document(s, {**GOOD_VALUE, "update_failures": ["a", 2]}),
     "value.update_failures[1]: expected a str, found int"),
    (lambda s: _document(s, {**GOOD_VALUE, "extra": 1}),
     "value: unknown field 'extra'; expected board, current, next, next_source, update, update_failures, warning"),
    (lambda s: _document(s, {k: v for k, v in GOOD_VALUE.items() if k != "current"}),
     "value: missing field 'current'"),
    (lambda s: _document(s, ["1632.3.0"]), "value: expected an object, found list"),
    (lambda s: _document(s, None), "value: expected an object, found NoneType"),
    (lambda s: " " * (st.MAX_DOCUMENT_BYTES + 1), f"larger than {st.MAX_DOCUMENT_BYTES} bytes; "
                                                  "expected the os-versions record of flow new-os"),
], ids=["not-json", "not-utf8", "too-deep", "not-an-object", "foreign-kind", "earlier-version", "other-record",
        "int-for-str", "list-for-str", "str-for-list", "bad-item", "unknown-field", "missing-field", "list-value",
        "no-value", "too-large"])
def test_a_foreign_record_is_a_state_error_naming_the_file(env: StepEnv, content, expected: str) -> None:
    state = env.begin("new-os")
    path = _record_file(state, OsVersions)
    data = content(state)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(StateError) as caught:
        state.load(OsVersions)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message, message


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("bytes", True, "value.placements[0].bytes: expected a int, found bool"),
    ("bytes", 1.5, "value.placements[0].bytes: expected a int, found float"),
    ("action", None, "value.placements[0].action: expected a str, found NoneType"),
    ("color", "red", "value.placements[0]: unknown field 'color'"),
])
def test_nested_values_are_checked_field_by_field(env: StepEnv, field: str, value: object, expected: str) -> None:
    state = env.begin("new-os")
    state.save(SAMPLES[3])
    path = _record_file(state, AddonsInstalled)
    document = json.loads(path.read_text())
    document["value"]["placements"][0][field] = value
    path.write_text(json.dumps(document))
    with pytest.raises(StateError) as caught:
        state.load(AddonsInstalled)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_a_dict_of_tuples_is_checked_inside(env: StepEnv) -> None:
    state = env.begin("new-os")
    state.save(SAMPLES[2])
    path = _record_file(state, RuntimeChoice)
    _rewrite(path, {"offered": {"1632.3.0": "17.03"}})
    with pytest.raises(StateError, match=r"value\.offered\.1632\.3\.0: expected a list, found str"):
        state.load(RuntimeChoice)


def test_an_unreadable_record_is_a_state_error(env: StepEnv) -> None:
    state = env.begin("new-os")
    _record_file(state, OsVersions).mkdir()
    with pytest.raises(StateError, match="os-versions.json: cannot read the os-versions record of flow new-os"):
        state.load(OsVersions)


def test_records_lists_what_can_be_read_and_skips_the_rest(env: StepEnv) -> None:
    state = env.begin("new-os", SAMPLES[0], SAMPLES[1], SAMPLES[6])
    _record_file(state, StoresCollected).write_text("{broken")
    assert state.records() == {"os-versions": SAMPLES[0], "kubernetes-version": SAMPLES[1]}


def test_a_saved_record_replaces_the_earlier_one(env: StepEnv) -> None:
    state = env.begin("new-os", KubernetesVersion("v1.8.4+coreos.0", "a"))
    state.save(KubernetesVersion("v1.9.1+coreos.0", "b"))
    assert state.load(KubernetesVersion) == KubernetesVersion("v1.9.1+coreos.0", "b")
    assert sorted(p.name for p in state.records_dir.iterdir()) == ["kubernetes-version.json", "run"]


# --- the run ------------------------------------------------------------------------------------

def test_a_run_begins_resumes_and_ends_ok(env: StepEnv) -> None:
    state = env.state("new-kubelet")
    begun = state.begin("kubelet-version")
    assert (begun.flow, begun.result, begun.finished) == ("new-kubelet", RUNNING, None)
    assert state.this_boot(begun)
    assert begun.steps == (StepRun("kubelet-version", RUNNING, begun.started),)
    assert state.records_dir.is_dir()
    state.step_succeeded("kubelet-version", ends_run=False)
    resumed = state.resume("addons")
    assert resumed.id == begun.id and resumed.result == RUNNING
    ended = state.step_succeeded("addons", ends_run=True, note="all good")
    assert (ended.result, ended.note, ended.failed_step) == (OK, "all good", None)
    assert ended.finished is not None and ended.finished > begun.started
    assert ended.duration == ended.finished - begun.started
    assert [(s.step, s.result) for s in ended.steps] == [("kubelet-version", OK), ("addons", OK)]
    addons = ended.steps[1]
    assert addons.finished is not None and addons.started < addons.finished <= ended.finished
    assert load_run(env.paths, "new-kubelet") == ended == state.current()
    assert json.loads(state.run_file.read_text())["kind"] == "torcx-tectonic.run.v2"


def test_a_step_that_does_not_end_the_run_leaves_it_running(env: StepEnv) -> None:
    state = env.begin("new-os")
    run = state.step_succeeded("os-version", ends_run=False)
    assert (run.result, run.finished) == (RUNNING, None)


def test_a_follower_does_not_change_an_ended_run(env: StepEnv) -> None:
    state = env.begin("new-kubelet")
    ended = state.step_succeeded("kubelet-version", ends_run=True)
    state.resume("recheck")
    after = state.step_succeeded("recheck", ends_run=True)
    assert (after.result, after.finished) == (OK, ended.finished)
    failed = state.step_failed("recheck", "kubelet.env vanished", ends_run=False)
    assert (failed.result, failed.finished, failed.failed_step, failed.failure) == (OK, ended.finished, None, None)
    assert [(s.step, s.result, s.message) for s in failed.steps] == [
        ("kubelet-version", OK, None), ("recheck", FAILED, "kubelet.env vanished")]


def test_a_failed_step_ends_the_run(env: StepEnv) -> None:
    state = env.begin("new-os")
    state.resume("docker-version")
    run = state.step_failed("docker-version", "no docker version for Kubernetes v1.9.0")
    assert (run.result, run.failed_step, run.failure) == (FAILED, "docker-version",
                                                          "no docker version for Kubernetes v1.9.0")
    assert run.finished is not None
    step = run.steps[-1]
    assert (step.step, step.result, step.message) == ("docker-version", FAILED, "no docker version for Kubernetes "
                                                                                 "v1.9.0")
    assert step.started < step.finished  # type: ignore[operator]
    assert load_run(env.paths, "new-os") == run


def test_a_failure_without_a_run_in_this_boot_is_still_recorded(env: StepEnv) -> None:
    run = env.state("new-os").step_failed("os-version", "update_engine unreachable")
    assert (run.result, run.failed_step) == (FAILED, "os-version")
    assert load_run(env.paths, "new-os") == run


def test_rebooting_ends_the_run_with_a_note(env: StepEnv) -> None:
    state = env.begin("bootstrap")
    state.resume("finish")
    run = state.rebooting("finish", "OS 1688.5.3 is installed")
    assert (run.result, run.note) == (REBOOTING, "rebooting for: OS 1688.5.3 is installed")
    assert run.finished is not None and run.steps[-1].result == OK


def test_a_run_of_another_boot_is_not_current(env: StepEnv) -> None:
    state = env.begin("new-os", OsVersions("amd64-usr", "1632.3.0", None, "x"))
    run = state.step_succeeded("os-version", ends_run=True)
    env.reboot()
    with pytest.raises(StateError, match="flow new-os has no run in this boot"):
        state.current()
    with pytest.raises(StateError, match="flow new-os has no run in this boot"):
        state.load(OsVersions)
    assert state.records() == {}
    assert load_run(env.paths, "new-os") == run  # kept across boots for the status


def test_a_run_whose_records_are_gone_is_not_current(env: StepEnv) -> None:
    state = env.begin("new-os")
    env.reboot()
    with pytest.raises(StateError, match="has no run in this boot"):
        state.resume("kubelet-version")


def test_a_new_run_gets_a_new_id(env: StepEnv) -> None:
    state = env.state("new-os")
    assert state.begin("os-version").id != state.begin("os-version").id


def test_counters_add_up_across_saves(env: StepEnv) -> None:
    state = env.begin("new-kubelet")
    placements = (AddonPlacement("1688.5.3", "downloaded", "/a", "https://b/a", 100),
                  AddonPlacement("1632.3.0", "linked", "/b"),
                  AddonPlacement("1576.4.0", "present", "/c"),
                  AddonPlacement("1520.3.0", "vendor", "/d", bytes=7))
    state.save(AddonsInstalled("docker", "17.03", placements))
    assert state.current().counters == {"downloaded_bytes": 100, "addons_installed": 2}
    state.save(KubernetesVersion("v1.8.4+coreos.0", "x"))  # counts nothing
    state.save(AddonsInstalled("docker", "17.03", placements[:1]))
    assert state.current().counters == {"downloaded_bytes": 200, "addons_installed": 3}
    assert state.step_succeeded("kubelet-version", ends_run=True).counters == {"downloaded_bytes": 200,
                                                                               "addons_installed": 3}


def test_only_bootstrap_finish_asks_for_a_reboot() -> None:
    for sample in SAMPLES:
        expected = "OS 1688.5.3 is installed" if isinstance(sample, BootstrapFinished) else None
        assert sample.reboot_reason() == expected
    assert BootstrapFinished(kubelet_enabled=True, reboot=False, reboot_reasons=("x",)).reboot_reason() is None


def test_with_step_replaces_the_entry_of_the_same_step() -> None:
    run = Run(flow="f", id="i", started=1.0, steps=(StepRun("a", RUNNING, 1.0),
                                                                   StepRun("b", RUNNING, 2.0)))
    changed = run.with_step(StepRun("a", OK, 1.0, 3.0))
    assert changed.steps == (StepRun("b", RUNNING, 2.0), StepRun("a", OK, 1.0, 3.0))
    assert run.duration is None and dataclasses.replace(run, finished=0.5).duration == 0.0


# --- the run record on disk ---------------------------------------------------------------------

def test_no_run_record_means_the_flow_never_ran(env: StepEnv) -> None:
    assert load_run(env.paths, "new-os") is None


@pytest.mark.parametrize(("change", "expected"), [
    ({"kind": "torcx-tectonic.run.v0"}, "kind is 'torcx-tectonic.run.v0', written by another version"),
    ({"result": "exploded"}, "result 'exploded' is not one of running, ok, failed, rebooting"),
    ({"started": "yesterday"}, ".started: expected a number, found str"),
    ({"started": True}, ".started: expected a number, found bool"),
    ({"steps": [{"step": "x", "result": "ok"}]}, ".steps[0]: missing field 'started'"),
    ({"counters": {"downloaded_bytes": "many"}}, ".counters.downloaded_bytes: expected a int, found str"),
    ({"owner": "me"}, "unknown field 'owner'"),
])
def test_a_foreign_run_record_is_a_state_error(env: StepEnv, change: dict[str, object], expected: str) -> None:
    env.begin("new-os")
    path = env.paths.runs_dir / "new-os.json"
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(StateError) as caught:
        load_run(env.paths, "new-os")
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


def test_a_run_record_that_is_not_json(env: StepEnv) -> None:
    path = env.paths.runs_dir / "new-os.json"
    path.parent.mkdir(parents=True)
    path.write_text("")
    with pytest.raises(StateError, match="not JSON; expected the run record of flow new-os"):
        load_run(env.paths, "new-os")


def test_saving_leaves_no_temporary_files(env: StepEnv) -> None:
    state = env.begin("new-os", SAMPLES[0])
    leftovers = [p.name for d in (state.records_dir, env.paths.runs_dir) for p in d.iterdir()
                 if p.name.startswith(".")]
    assert leftovers == []


# --- the manifest cache -------------------------------------------------------------------------

def test_the_cache_returns_what_was_put_by_digest(env: StepEnv) -> None:
    cache = ManifestCache(env.paths.cache_dir)
    raw = b'{"kind": "torcx-package-list-v0"}'
    digest = cache.put("amd64-usr", "1632.3.0", raw)
    assert digest == hashlib.sha256(raw).hexdigest()
    assert cache.path("amd64-usr", "1632.3.0") == env.at("/var/cache/torcx-tectonic/manifests/amd64-usr/1632.3.0.json")
    assert cache.get("amd64-usr", "1632.3.0", digest) == raw
    assert cache.get("amd64-usr", "1632.3.0") == raw


def test_putting_the_same_manifest_again_rewrites_nothing(env: StepEnv) -> None:
    cache = ManifestCache(env.paths.cache_dir)
    cache.put("amd64-usr", "1632.3.0", b"{}")
    path = cache.path("amd64-usr", "1632.3.0")
    os.utime(path, ns=(1, 1))
    cache.put("amd64-usr", "1632.3.0", b"{}")
    assert path.stat().st_mtime_ns == 1


def test_a_cached_manifest_changed_after_verification_is_refused(env: StepEnv) -> None:
    cache = ManifestCache(env.paths.cache_dir)
    digest = cache.put("amd64-usr", "1632.3.0", b"{}")
    cache.path("amd64-usr", "1632.3.0").write_bytes(b'{"tampered": true}')
    with pytest.raises(StateError, match=f"changed since it was verified in this run; expected sha256 {digest[:16]}"):
        cache.get("amd64-usr", "1632.3.0", digest)


def test_a_manifest_not_cached(env: StepEnv) -> None:
    with pytest.raises(StateError, match="no verified manifest for amd64-usr 1688.5.3 cached"):
        ManifestCache(env.paths.cache_dir).get("amd64-usr", "1688.5.3", "00" * 32)
