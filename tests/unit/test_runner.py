"""runner: one step of a flow run end to end, with real step functions on a
node under a temporary root.

The stand-ins are the outside world only: PID 1 over D-Bus
(``torcx_tectonic.node.systemd``), update_engine's D-Bus calls, the api-server
for the annotation, and where the entry point finds its configuration file
(the real loader reads a file in the temporary directory).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from torcx_tectonic import config as configuration
from torcx_tectonic import flows
from torcx_tectonic.commands import metrics, status
from torcx_tectonic.errors import ConfigError, InputError, NetworkError, TorcxTectonicError
from torcx_tectonic.node import updateengine
from torcx_tectonic.paths import METRICS_DIR
from torcx_tectonic.state import (
    FAILED,
    OK,
    REBOOTING,
    RUNNING,
    AddonsInstalled,
    BootstrapFinished,
    DockerReset,
    KubeletEnvWritten,
    KubeletRechecked,
    KubernetesVersion,
    NodeAnnotated,
    OsVersions,
    Record,
    Run,
    RuntimeChoice,
    StoresCollected,
    load_run,
)
from torcx_tectonic.steps import runner
from torcx_tectonic.steps.context import Context

from .helpers import Keys, RoutedServer, dead_pid, make_config
from .stepenv import (
    ADDON,
    ADDON_NAME,
    CURRENT_OS,
    KUBE,
    MAPPINGS,
    NEXT_OS,
    FakeKube,
    StepEnv,
    addon_manifest,
    serve_manifest,
    use_bucket,
)

STOPPED = "stopped by systemd before it ended (its timeout passed, or the node shuts down)"


@pytest.fixture(autouse=True)
def process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What the entry point changes in the process (log handlers, the
    SIGTERM handler) is put back after each test."""
    monkeypatch.delenv("SYSTEMD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, sigterm)
    root.handlers[:] = handlers
    root.setLevel(level)


class Systemd:
    """PID 1 as the steps see it (pystemd over D-Bus): what was asked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.enabled: list[str] = []
        self.started: list[str] = []
        self.reboots = 0
        self.on_enable: Any = None
        self.on_reboot: Any = None
        monkeypatch.setattr("torcx_tectonic.node.systemd.enable", self.enable)
        monkeypatch.setattr("torcx_tectonic.node.systemd.start", self.started.append)
        monkeypatch.setattr("torcx_tectonic.node.systemd.reboot", self.reboot)

    def enable(self, unit: str) -> bool:
        self.enabled.append(unit)
        if self.on_enable:
            self.on_enable()
        return True

    def reboot(self) -> None:
        self.reboots += 1
        if self.on_reboot:
            self.on_reboot()


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Systemd:
    return Systemd(monkeypatch)


def _sigterm() -> None:
    """systemd stops the unit: SIGTERM to this process (handled in the main thread at once)."""
    os.kill(os.getpid(), signal.SIGTERM)


def entry_point(env: StepEnv, monkeypatch: pytest.MonkeyPatch, entry: str, flow: str, step: str,
                extra_config: str = "") -> int:
    """Run a libexec script's ``run(entry)`` on the node; its exit status."""
    main = env.config_file(extra_config)
    monkeypatch.setattr("torcx_tectonic.config.load",
                        functools.partial(configuration.load, main, main.parent / "conf.d"))
    with pytest.raises(SystemExit) as exited:
        runner.run(entry, ["--flow", flow, "--step", step], env.paths)
    code = exited.value.code
    assert isinstance(code, int)
    return code


def run_step(env: StepEnv, flow: str, step: str) -> int:
    """``run_step`` for a step of the real flow table, with the node's configuration."""
    config = env.config
    found = flows.find_step(config, flow, step)
    assert found is not None
    return runner.run_step(found[0], found[1], config, None, env.paths)


def _run(env: StepEnv, flow: str) -> Run:
    run = load_run(env.paths, flow)
    assert run is not None
    return run


def _steps(run: Run) -> list[tuple[str, str]]:
    return [(s.step, s.result) for s in run.steps]


# --- success and failure ------------------------------------------------------------------------------

def test_success_records_the_output_and_the_run(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    assert entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version") == 0
    assert env.state("new-kubelet").load(KubernetesVersion) == KubernetesVersion("v1.9.1+coreos.0",
                                                                                 str(env.kubelet_env))
    run = _run(env, "new-kubelet")
    assert (run.result, run.finished, _steps(run)) == (RUNNING, None, [("kubelet-version", OK)])
    assert "Kubernetes version v1.9.1+coreos.0" in capsys.readouterr().err


def test_a_known_error_is_one_journal_line_a_failed_run_and_exit_1(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version") == 1
    message = f"{env.kubelet_env}: missing; expected a kubelet environment file with KUBELET_IMAGE_TAG"
    assert capsys.readouterr().err == f"ERROR: new-kubelet/kubelet-version failed: {message}\n"
    run = _run(env, "new-kubelet")
    assert (run.result, run.failed_step, run.failure) == (FAILED, "kubelet-version", message)
    assert run.finished is not None and _steps(run) == [("kubelet-version", FAILED)]
    assert env.state("new-kubelet").records() == {}


def test_in_the_journal_the_line_carries_its_priority(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version") == 1
    out = capsys.readouterr().out
    assert out == f"<3>new-kubelet/kubelet-version failed: {env.kubelet_env}: missing; expected a kubelet " \
                  "environment file with KUBELET_IMAGE_TAG\n"


def test_bad_configuration_fails_the_step_naming_file_and_line(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    code = entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version",
                       extra_config="[bootstrap]\nreboot = perhaps\n")
    conf = env.config_file("[bootstrap]\nreboot = perhaps\n")
    line = conf.read_text().splitlines().index("reboot = perhaps") + 1
    assert code == 1
    run = _run(env, "new-kubelet")
    assert run.result == FAILED and run.failure is not None
    assert run.failure.startswith(f"{conf}:{line}: [bootstrap] reboot = 'perhaps': expected one of yes")
    assert env.state("new-kubelet").records() == {}  # the step did not run
    assert f"ERROR: new-kubelet/kubelet-version failed: {conf}:{line}:" in capsys.readouterr().err


def test_debug_level_keeps_the_traceback(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "debug")
    with pytest.raises(InputError, match="kubelet.env: missing"):
        entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version")
    assert _run(env, "new-kubelet").result == FAILED


def test_a_refusal_of_the_node_is_a_failure_naming_the_path_not_a_bug(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    # where the step's record goes is a directory: saving it raises IsADirectoryError (like a full disk would
    # raise ENOSPC): the node refused, and the message says where
    record = env.paths.state_dir / "new-kubelet" / "kubernetes-version.json"
    (record).mkdir(parents=True)
    assert entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version") == 1
    run = _run(env, "new-kubelet")
    assert run.result == FAILED and run.failure is not None
    assert "Is a directory" in run.failure and str(record) in run.failure
    err = capsys.readouterr().err
    assert "a bug in torcx-tectonic" not in err and "Traceback" not in err


def test_an_internal_error_is_recorded_as_one_and_exits_1(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("torcx_tectonic.steps.kubeversion.kube_minor", broken)
    assert entry_point(env, monkeypatch, "kubelet-version", "new-kubelet", "kubelet-version") == 1
    run = _run(env, "new-kubelet")
    assert run.result == FAILED and run.failure == "internal error: KeyError('a bug')"
    err = capsys.readouterr().err
    assert "new-kubelet/kubelet-version failed with an internal error (a bug in torcx-tectonic)" in err
    assert "Traceback (most recent call last)" in err


def test_a_step_without_a_run_in_this_boot_fails(env: StepEnv) -> None:
    env.begin("new-os", OsVersions("amd64-usr", CURRENT_OS, NEXT_OS, "x"))
    env.reboot()
    assert run_step(env, "new-os", "gc") == 1
    run = _run(env, "new-os")
    assert (run.result, run.failed_step) == (FAILED, "gc")
    assert run.failure == "flow new-os has no run in this boot; its first step begins one"


@pytest.mark.parametrize(("entry", "argv", "complaint"), [
    ("gc-stores", ["--flow", "old-os", "--step", "gc"], "gc-stores: flow 'old-os' has no step 'gc' run by gc-stores\n"),
    ("gc-stores", ["--flow", "new-os", "--step", "sweep"], "flow 'new-os' has no step 'sweep'"),
    ("next-os", ["--flow", "new-os", "--step", "gc"], "next-os: flow 'new-os' has no step 'gc' run by next-os"),
    ("gc-stores", ["--flow", "new-os"], "the following arguments are required: --step"),
], ids=["unknown-flow", "unknown-step", "other-entry", "missing-step"])
def test_an_unknown_flow_or_step_exits_2_and_writes_nothing(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str], entry: str,
                                                            argv: list[str], complaint: str) -> None:
    main = env.config_file()
    monkeypatch.setattr("torcx_tectonic.config.load",
                        functools.partial(configuration.load, main, main.parent / "conf.d"))
    before = env.snapshot()
    with pytest.raises(SystemExit) as exited:
        runner.run(entry, argv, env.paths)
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
    assert env.snapshot() == before


# --- systemd stops the step; a reboot ------------------------------------------------------------------

def _bootstrap_until_finish(env: StepEnv, next_os: str | None = None, changed: bool = False) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    env.begin("bootstrap", OsVersions("amd64-usr", CURRENT_OS, next_os, "update_engine", update="updated"),
              KubernetesVersion(KUBE, "x"),
              AddonsInstalled("docker", "17.03", previous="com.coreos.cl" if changed else "17.03",
                              runtime_changed=changed),
              KubeletEnvWritten(str(env.kubelet_env), True, KUBE))


def test_sigterm_records_that_systemd_stopped_the_step(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                       systemd: Systemd, capsys: pytest.CaptureFixture[str]) -> None:
    _bootstrap_until_finish(env)
    systemd.on_enable = _sigterm
    assert entry_point(env, monkeypatch, "finish-bootstrap", "bootstrap", "finish") == 1
    run = _run(env, "bootstrap")
    assert (run.result, run.failed_step, run.failure) == (FAILED, "finish", STOPPED)
    assert systemd.enabled == ["kubelet.service"] and systemd.started == []
    assert f"ERROR: bootstrap/finish {STOPPED}" in capsys.readouterr().err


def test_a_reboot_reason_ends_the_run_rebooting(env: StepEnv, monkeypatch: pytest.MonkeyPatch, systemd: Systemd,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _bootstrap_until_finish(env, next_os=NEXT_OS, changed=True)
    assert entry_point(env, monkeypatch, "finish-bootstrap", "bootstrap", "finish") == 0
    reason = f"OS {NEXT_OS} is installed, docker changes from com.coreos.cl to 17.03"
    assert systemd.reboots == 1
    assert (systemd.enabled, systemd.started) == (["kubelet.service"], [])
    run = _run(env, "bootstrap")
    assert (run.result, run.note, run.failure) == (REBOOTING, f"rebooting for: {reason}", None)
    assert run.finished is not None and run.steps[-1].step == "finish" and run.steps[-1].result == OK
    assert env.state("bootstrap").load(BootstrapFinished).reboot is True
    assert f"WARNING: rebooting for: {reason}" in capsys.readouterr().err


def test_the_stop_that_follows_a_queued_reboot_is_a_quiet_exit_0(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                                  systemd: Systemd) -> None:
    _bootstrap_until_finish(env, next_os=NEXT_OS)
    systemd.on_reboot = _sigterm
    assert entry_point(env, monkeypatch, "finish-bootstrap", "bootstrap", "finish") == 0
    assert _run(env, "bootstrap").result == REBOOTING


def test_a_reboot_that_cannot_be_queued_fails_the_step(env: StepEnv, systemd: Systemd) -> None:
    _bootstrap_until_finish(env, next_os=NEXT_OS)

    def no_bus() -> None:
        raise TorcxTectonicError("systemd: reboot failed: no bus")

    systemd.on_reboot = no_bus
    assert run_step(env, "bootstrap", "finish") == 1
    run = _run(env, "bootstrap")
    assert (run.result, run.failed_step, run.failure) == (FAILED, "finish", "systemd: reboot failed: no bus")


def test_without_a_reboot_reason_the_last_step_ends_the_run_ok(env: StepEnv, systemd: Systemd) -> None:
    _bootstrap_until_finish(env)
    assert run_step(env, "bootstrap", "finish") == 0
    assert systemd.reboots == 0
    run = _run(env, "bootstrap")
    assert (run.result, run.note) == (OK, None) and run.finished is not None
    assert systemd.started[0] == "kubelet.service"


# --- followers ----------------------------------------------------------------------------------------

def _ended_new_kubelet_run(env: StepEnv) -> Run:
    state = env.begin("new-kubelet", KubernetesVersion("v1.9.1+coreos.0", "kubelet.env"))
    state.step_succeeded("kubelet-version", ends_run=False)
    state.resume("addons")
    return state.step_succeeded("addons", ends_run=True)


def test_a_follower_joins_the_ended_run_without_changing_its_result(env: StepEnv, systemd: Systemd) -> None:
    ended = _ended_new_kubelet_run(env)
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.10.0_coreos.0\n")
    assert run_step(env, "new-kubelet", "recheck") == 0
    assert systemd.started == ["torcx-new-kubelet-addons.service"]
    run = _run(env, "new-kubelet")
    assert (run.id, run.result, run.finished) == (ended.id, OK, ended.finished)
    assert _steps(run) == [("kubelet-version", OK), ("addons", OK), ("recheck", OK)]
    assert env.state("new-kubelet").load(KubeletRechecked) == KubeletRechecked(
        "v1.9.1+coreos.0", "v1.10.0+coreos.0", True)


def test_a_failing_follower_does_not_fail_the_ended_run(env: StepEnv, systemd: Systemd) -> None:
    ended = _ended_new_kubelet_run(env)
    assert run_step(env, "new-kubelet", "recheck") == 1  # kubelet.env is missing
    run = _run(env, "new-kubelet")
    assert (run.result, run.finished, run.failed_step, run.failure) == (OK, ended.finished, None, None)
    assert _steps(run)[-1] == ("recheck", FAILED)
    assert systemd.started == []


def test_a_follower_without_a_run_in_this_boot_leaves_no_run_in_progress(env: StepEnv, systemd: Systemd) -> None:
    _ended_new_kubelet_run(env)
    env.reboot()
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.10.0_coreos.0\n")
    assert run_step(env, "new-kubelet", "recheck") == 1  # started by hand: there is nothing to recheck
    assert systemd.started == []
    assert _run(env, "new-kubelet").result != RUNNING


def test_the_docker_reset_flow_is_one_step(env: StepEnv) -> None:
    env.booted("17.03")
    env.write(env.paths.docker_reset_marker, '{"from": "com.coreos.cl", "to": "17.03"}\n')
    env.write(env.paths.docker_data / "overlay2" / "layer", "x")
    assert run_step(env, "docker-reset", "data") == 0
    assert list(env.paths.docker_data.iterdir()) == [] and not env.paths.docker_reset_marker.exists()
    assert env.state("docker-reset").load(DockerReset) == DockerReset(removed=("overlay2",), booted="17.03")
    run = _run(env, "docker-reset")
    assert (run.result, _steps(run)) == (OK, [("data", OK)])


# --- a whole flow, and its metrics -----------------------------------------------------------------------

def _metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_new_os_run_end_to_end_with_metrics(env: StepEnv, monkeypatch: pytest.MonkeyPatch, bucket: RoutedServer,
                                              keys: Keys) -> None:
    textfiles = env.root.parent / "textfile_collector"
    env.configure({"metrics.textfile_dir": str(textfiles), "kubernetes.annotation": "example.com/hook-ok"})
    use_bucket(env, bucket, keys)
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    (env.paths.user_store / "1576.4.0").mkdir(parents=True)
    url = {"url": bucket.base + "/" + ADDON_NAME}
    for os_version in (NEXT_OS, CURRENT_OS):
        serve_manifest(bucket, os_version, addon_manifest(url), keys)
    bucket.routes["/" + ADDON_NAME] = (200, ADDON)
    monkeypatch.setattr("torcx_tectonic.node.updateengine.get_status",
                        lambda: updateengine.Status(0, 1.0, updateengine.NEED_REBOOT, NEXT_OS, 0))
    kube = FakeKube("example.com/before-reboot", label_after=0)
    monkeypatch.setattr("torcx_tectonic.steps.annotation.client", lambda config: kube)

    written = []
    for step in ("os-version", "kubelet-version", "docker-version", "addons", "gc", "annotate"):
        assert run_step(env, "new-os", step) == 0, step
        metrics.write_current(env.config, env.paths)  # as the metrics unit does when the run record changed
        text = (textfiles / metrics.FILE_NAME).read_text()
        written.append('torcx_tectonic_verdict_ok{os="next"} 1.0' in text)
    # the next OS has its Docker once the addons step ran, long before the run ends with the annotation
    assert written == [False, False, False, True, True, True]

    run = _run(env, "new-os")
    assert (run.result, run.failure) == (OK, None)
    assert [s for s, _ in _steps(run)] == ["os-version", "kubelet-version", "docker-version", "addons", "gc",
                                           "annotate"]
    assert run.counters == {"downloaded_bytes": len(ADDON), "addons_installed": 2}
    records = env.state("new-os").records()
    assert sorted(records) == ["addons", "annotation", "kubernetes-version", "os-versions", "pin", "runtime-choice",
                               "store-gc"]
    assert isinstance(records["runtime-choice"], RuntimeChoice) and records["runtime-choice"].version == "17.03"
    assert records["store-gc"] == StoresCollected(CURRENT_OS, ("1576.4.0",))
    assert records["annotation"] == NodeAnnotated("node-1", "example.com/hook-ok", "example.com/before-reboot")
    assert kube.annotations == [("node-1", {"example.com/hook-ok": "true"})]
    assert bucket.requests.count("/" + ADDON_NAME) == 1

    samples = _metrics(textfiles / metrics.FILE_NAME)
    flow = (("flow", "new-os"),)
    assert samples[("torcx_tectonic_last_run_result", (("flow", "new-os"), ("result", "ok")))] == 1
    assert samples[("torcx_tectonic_last_run_result", (("flow", "new-os"), ("result", "running")))] == 0
    assert samples[("torcx_tectonic_last_run_downloaded_bytes", flow)] == len(ADDON)
    assert samples[("torcx_tectonic_last_run_addons_installed", flow)] == 2
    assert samples[("torcx_tectonic_last_run_start_timestamp_seconds", flow)] == run.started
    assert samples[("torcx_tectonic_last_run_duration_seconds", flow)] == pytest.approx(run.duration)
    assert ("torcx_tectonic_verdict_ok", (("os", "next"),)) in samples


def test_metrics_follow_a_failed_step(env: StepEnv) -> None:
    textfiles = env.root.parent / "textfile_collector"
    env.configure({"metrics.textfile_dir": str(textfiles)})
    assert run_step(env, "new-kubelet", "kubelet-version") == 1
    metrics.write_current(env.config, env.paths)
    samples = _metrics(textfiles / metrics.FILE_NAME)
    assert samples[("torcx_tectonic_last_run_result", (("flow", "new-kubelet"), ("result", "failed")))] == 1


def test_no_metrics_directory_writes_no_metrics(env: StepEnv) -> None:
    existed = (Path(METRICS_DIR) / metrics.FILE_NAME).exists()
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    assert env.config.metrics.textfile_dir is None
    assert run_step(env, "new-kubelet", "kubelet-version") == 0
    assert [p for p in env.root.parent.rglob("*.prom")] == []
    assert (Path(METRICS_DIR) / metrics.FILE_NAME).exists() == existed


def test_a_step_writes_no_metrics_itself(env: StepEnv) -> None:
    """The metrics unit writes them (started by the run record's change): a
    step neither waits for the status machinery nor fails on a broken
    metrics directory."""
    blocked = env.write(env.root.parent / "not-a-directory", "")
    env.configure({"metrics.textfile_dir": str(blocked / "textfiles")})
    assert run_step(env, "docker-reset", "data") == 0  # a run of one step: it ends the run
    assert _run(env, "docker-reset").result == OK
    assert list(env.root.parent.rglob("*.prom")) == []


def test_the_metrics_writer_says_what_failed(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    blocked = env.write(env.root.parent / "not-a-directory", "")
    env.configure({"metrics.textfile_dir": str(blocked / "textfiles")})
    monkeypatch.setattr("torcx_tectonic.config.load", lambda: env.config)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert metrics.main(env.paths) == 1
    assert f"ERROR: metrics not written: [Errno 17] File exists: '{blocked}'" in capsys.readouterr().err


def test_the_metrics_writer_removes_what_a_killed_writer_left(env: StepEnv) -> None:
    textfiles = env.root.parent / "textfile_collector"
    env.configure({"metrics.textfile_dir": str(textfiles)})
    left = env.write(textfiles / f".{metrics.FILE_NAME}.{dead_pid()}.ab12cd34.tmp", "torcx_tectonic_verd")
    assert metrics.write_current(env.config, env.paths) == textfiles / metrics.FILE_NAME
    assert sorted(p.name for p in textfiles.iterdir()) == [metrics.FILE_NAME]
    assert not left.exists()


def test_the_metrics_writer_writes_again_when_a_run_changed_meanwhile(env: StepEnv,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The path unit does not start the writer again while it runs: a step
    that ends meanwhile is caught by the writer's second pass."""
    textfiles = env.root.parent / "textfile_collector"
    env.configure({"metrics.textfile_dir": str(textfiles)})
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    real_gather = status.gather
    passes: list[int] = []

    def gather_while_a_step_ends(*args: Any, **kwargs: Any) -> Any:
        status = real_gather(*args, **kwargs)
        if not passes:
            assert run_step(env, "new-kubelet", "kubelet-version") == 0
        passes.append(1)
        return status

    monkeypatch.setattr("torcx_tectonic.commands.metrics.gather", gather_while_a_step_ends)
    metrics.write_current(env.config, env.paths)
    assert len(passes) == 2
    samples = _metrics(textfiles / metrics.FILE_NAME)
    assert samples[("torcx_tectonic_last_run_result", (("flow", "new-kubelet"), ("result", "running")))] == 1


# --- retries (attempt) ----------------------------------------------------------------------------------

def _flaky(failures: list[Exception], record: Record | None = None) -> Any:
    calls: list[dict[str, object]] = []

    def step(ctx: Context, **params: object) -> Record:
        calls.append(params)
        if failures:
            raise failures.pop(0)
        return record or KubernetesVersion(KUBE, f"attempt {len(calls)}")

    step.calls = calls  # type: ignore[attr-defined]
    return step


def test_retry_tries_again_with_doubling_pauses_until_it_works(env: StepEnv) -> None:
    env.configure({"units.retry_delay": "3", "units.retry_attempts": "4"})
    pauses: list[float] = []
    step = _flaky([NetworkError("bucket down"), InputError("ConfigMap not fixed yet")])
    record = runner.attempt(step, env.context("new-os", "docker-version"), sleep=pauses.append)
    assert record == KubernetesVersion(KUBE, "attempt 3")
    assert pauses == [3.0, 6.0]


def test_retry_gives_up_after_the_configured_attempts(env: StepEnv) -> None:
    env.configure({"units.retry_delay": "1", "units.retry_attempts": "3"})
    pauses: list[float] = []
    step = _flaky([InputError(f"failure {n}") for n in range(5)])
    with pytest.raises(InputError, match="failure 2"):
        runner.attempt(step, env.context("new-os", "docker-version"), sleep=pauses.append)
    assert pauses == [1.0, 2.0]
    assert len(step.calls) == 3


def test_a_step_without_retry_runs_once(env: StepEnv) -> None:
    pauses: list[float] = []
    ctx = env.context("new-os", "gc")
    assert ctx.step.retry is False
    with pytest.raises(InputError, match="once"):
        runner.attempt(_flaky([InputError("once")]), ctx, sleep=pauses.append)
    assert pauses == []


def test_configuration_errors_are_not_retried(env: StepEnv) -> None:
    pauses: list[float] = []
    step = _flaky([ConfigError("bad file")])
    with pytest.raises(ConfigError):
        runner.attempt(step, env.context("new-os", "docker-version"), sleep=pauses.append)
    assert pauses == [] and len(step.calls) == 1


def test_a_bug_is_not_retried(env: StepEnv) -> None:
    pauses: list[float] = []
    step = _flaky([KeyError("bug")])
    with pytest.raises(KeyError):
        runner.attempt(step, env.context("new-os", "docker-version"), sleep=pauses.append)
    assert pauses == [] and len(step.calls) == 1


def test_the_step_gets_its_parameters_from_the_flow_table(env: StepEnv) -> None:
    step = _flaky([])
    runner.attempt(step, env.context("new-kubelet", "recheck"), sleep=lambda _: None)
    assert step.calls == [{"anchor": "torcx-new-kubelet-addons.service"}]


def test_pauses_are_capped() -> None:
    units = make_config({"units.retry_delay": "200", "units.retry_attempts": "5"}).units
    assert configuration.retry_delays(units) == [200.0, 400.0, configuration.MAX_RETRY_DELAY_SECS,
                                                 configuration.MAX_RETRY_DELAY_SECS]


@pytest.mark.parametrize("entry", sorted(flows.ENTRY_POINTS))
def test_every_entry_point_names_a_function(entry: str) -> None:
    assert callable(runner.step_function(entry))


def test_stopped_is_not_an_error_a_step_could_swallow() -> None:
    assert issubclass(runner.Stopped, BaseException) and not issubclass(runner.Stopped, Exception)


# --- the flow lock's readiness --------------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_the_lock_tells_systemd_it_is_ready_with_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           abstract: bool) -> None:
    import socket

    from torcx_tectonic.steps import lock

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        if abstract:
            name = f"torcx-tectonic-test-{os.getpid()}"
            receiver.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        else:
            receiver.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        lock.notify("READY=1\nSTATUS=new-os holds the lock")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=new-os holds the lock"
    monkeypatch.delenv("NOTIFY_SOCKET")
    lock.notify("READY=1")  # not run by systemd: nothing to tell


@pytest.mark.parametrize("argv", [["--flow", "new-os", "--step", "gc"], ["--step", "gc", "--flow", "new-os"],
                                  ["--flow=new-os", "--step=gc"], ["--flow", "new-os", "--step=gc"]])
def test_a_step_reads_its_flow_and_step(argv: list[str]) -> None:
    args = runner.parse_args("gc-stores", argv)
    assert (args.flow, args.step) == ("new-os", "gc")


@pytest.mark.parametrize("argv", [["--flow", "new-os"], ["--flow", "new-os", "--step", "gc", "extra"], ["--help"],
                                  ["--flow", "--step", "--step", "gc"]])
def test_anything_else_is_explained_by_argparse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        runner.parse_args("gc-stores", argv)
    captured = capsys.readouterr()
    assert "usage: gc-stores" in captured.out + captured.err
