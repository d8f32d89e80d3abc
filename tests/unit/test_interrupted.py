"""A step that does not end well: killed, retried, run twice at once.

- ``step-stopped`` (the units' ``ExecStopPost=``) removes what a killed step
  left and records how its process ended;
- a retried step says at its first failure what is wrong and how long it
  keeps trying;
- the run lock keeps two copies of a step of one flow apart;
- a flow started again whose first steps skip continues its failed run.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torcx_tectonic import config as configuration
from torcx_tectonic import flows
from torcx_tectonic.errors import NetworkError, VerificationError
from torcx_tectonic.state import FAILED, OK, RUNNING, KubernetesVersion, OsVersions, Record, load_run
from torcx_tectonic.steps import cleanup, runner
from torcx_tectonic.steps.context import Context

from .helpers import dead_pid
from .stepenv import CURRENT_OS, KUBE, StepEnv


@pytest.fixture(autouse=True)
def logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _stopped(env: StepEnv, monkeypatch: pytest.MonkeyPatch, flow: str, step: str, **environ: str) -> int:
    main = env.config_file()
    monkeypatch.setattr("torcx_tectonic.config.load", functools.partial(configuration.load, main,
                                                                         main.parent / "conf.d"))
    with pytest.raises(SystemExit) as exited:
        runner.stopped(["--flow", flow, "--step", step], env.paths, environ)
    code = exited.value.code
    assert isinstance(code, int)
    return code


KILLED = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}


# --- step-stopped ------------------------------------------------------------------------------------------

def test_a_killed_step_is_recorded_and_what_it_left_is_removed(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    state = env.begin("new-os", OsVersions("amd64-usr", CURRENT_OS, "1688.5.3", "x"))
    state.resume("gc")
    dead, alive = dead_pid(), os.getpid()
    store = env.paths.user_store
    left = [store / CURRENT_OS / f".docker:17.03.torcx.tgz.{dead}.abcd1234.tmp",
            env.paths.user_profiles / f".tectonic.json.{dead}.abcd1234.tmp",
            env.paths.runs_dir / f".new-kubelet.json.{dead}.abcd1234.tmp",
            store / CURRENT_OS / f".docker:17.03.torcx.tgz.{dead}.link"]
    busy = env.paths.runs_dir / f".bootstrap.json.{alive}.abcd1234.tmp"  # another flow writing right now
    trash = store / ".gc-1520.3.0" / "docker:1.12.torcx.tgz"
    old_docker = env.paths.docker_data.with_name("docker.torcx-tectonic-old") / "image" / "layer"
    for path in [*left, busy, trash, old_docker]:
        env.write(path, "x")
    assert _stopped(env, monkeypatch, "new-os", "gc", **KILLED) == 0
    assert [p for p in left if p.exists()] == []
    assert busy.exists()
    assert not trash.parent.exists() and not old_docker.parent.parent.exists()
    run = load_run(env.paths, "new-os")
    assert run is not None and (run.result, run.failed_step) == (FAILED, "gc")
    assert run.failure == "its process was killed by signal KILL before the step ended"


def test_after_a_success_step_stopped_does_nothing(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.begin("new-os")
    stale = env.paths.runs_dir / f".new-os.json.{dead_pid()}.abcd1234.tmp"
    env.write(stale, "x")
    before = env.snapshot()
    assert _stopped(env, monkeypatch, "new-os", "os-version", SERVICE_RESULT="success") == 0
    assert env.snapshot() == before


def test_a_step_that_recorded_its_failure_keeps_it(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    state = env.begin("new-os")
    state.step_failed("os-version", "update_engine is not on the bus")
    assert _stopped(env, monkeypatch, "new-os", "os-version", SERVICE_RESULT="exit-code", EXIT_CODE="exited",
                    EXIT_STATUS="1") == 0
    run = load_run(env.paths, "new-os")
    assert run is not None and run.failure == "update_engine is not on the bus"


def test_a_step_killed_before_its_run_began_is_a_failed_run(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _stopped(env, monkeypatch, "bootstrap", "os-update", **KILLED) == 0
    run = load_run(env.paths, "bootstrap")
    assert run is not None and (run.result, run.failed_step) == (FAILED, "os-update")


def test_a_step_killed_after_it_recorded_its_result_still_stops_the_run(env: StepEnv,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # killed after it recorded its result (while it exits): the unit failed, so the steps after it do not start
    state = env.begin("new-os")
    state.step_succeeded("os-version", ends_run=False)
    assert _stopped(env, monkeypatch, "new-os", "os-version", **KILLED) == 0
    run = load_run(env.paths, "new-os")
    assert run is not None and (run.result, run.failed_step) == (FAILED, "os-version")
    assert run.failure is not None and run.failure.endswith("(after it had recorded its result)")


def test_a_run_that_ended_keeps_its_result(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    state = env.begin("docker-reset")
    state.step_succeeded("data", ends_run=True)
    assert _stopped(env, monkeypatch, "docker-reset", "data", **KILLED) == 0
    run = load_run(env.paths, "docker-reset")
    assert run is not None and run.result == OK


@pytest.mark.parametrize(("environ", "message"), [
    (KILLED, "its process was killed by signal KILL before the step ended"),
    ({"SERVICE_RESULT": "core-dump", "EXIT_CODE": "dumped", "EXIT_STATUS": "SEGV"},
     "its process crashed (signal SEGV, core dumped) before the step ended"),
    ({"SERVICE_RESULT": "timeout", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"},
     "its process was killed by signal KILL: systemd stopped it when its time limit passed"),
    ({"SERVICE_RESULT": "oom-kill", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"},
     "its process was killed by signal KILL: the kernel ran out of memory"),
    ({"SERVICE_RESULT": "exit-code", "EXIT_CODE": "exited", "EXIT_STATUS": "1"},
     "its process exited with status 1 without recording a result before the step ended"),
], ids=["killed", "core-dump", "timeout", "oom", "exited"])
def test_how_a_step_ended_in_words(environ: dict[str, str], message: str) -> None:
    assert runner.ended_how(environ["SERVICE_RESULT"], environ["EXIT_CODE"], environ["EXIT_STATUS"]) == message


# --- the first failure says how long the step keeps trying -------------------------------------------------

def _failing(*errors: Exception) -> Callable[..., Record]:
    pending = list(errors)

    def step(ctx: Context, **params: object) -> Record:
        if pending:
            raise pending.pop(0)
        return KubernetesVersion(KUBE, "x")

    return step


def test_the_first_failure_says_the_attempts_left_and_how_long(env: StepEnv, caplog: pytest.LogCaptureFixture) -> None:
    env.configure({"units.retry_delay": "30", "units.retry_attempts": "5"})
    env.begin("new-os")
    env.state("new-os").resume("docker-version")
    ctx = env.context("new-os", "docker-version")
    limit = flows.timeout_secs(ctx.step, ctx.config)
    runner.attempt(_failing(NetworkError("bucket down")), ctx, sleep=lambda _: None)
    first = caplog.records[0].getMessage()
    assert first == (f"new-os/docker-version failed (attempt 1 of 5), trying again in 30s: bucket down; 4 more "
                     f"attempts over the next 450s of pauses (30s, 60s, 120s, 240s), within the unit's limit of "
                     f"{limit}s")
    run = load_run(env.paths, "new-os")
    assert run is not None and run.result == RUNNING
    assert run.steps[-1].message is not None and run.steps[-1].message.startswith("attempt 1 of 5 failed: bucket down")


def test_a_verification_failure_says_it_rarely_fixes_itself(env: StepEnv, caplog: pytest.LogCaptureFixture) -> None:
    env.configure({"units.retry_delay": "1", "units.retry_attempts": "2"})
    ctx = env.context("new-os", "docker-version")
    runner.attempt(_failing(VerificationError("signed by a key not in the keyring")), ctx, sleep=lambda _: None)
    message = caplog.records[0].getMessage()
    assert "signed by a key not in the keyring; 1 more attempt over the next 1s of pauses (1s)" in message
    assert message.endswith(runner.VERIFICATION_HINT)


# --- the run lock ----------------------------------------------------------------------------------------

def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_a_step_holds_its_flows_run_lock_while_it_works(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    seen: list[bool] = []
    lock = env.paths.state_dir / "new-kubelet.lock"
    real = runner.step_function("kubelet-version")

    def step(ctx: Context, **params: object) -> Record:
        seen.append(_lock_is_free(lock))
        return real(ctx, **params)

    monkeypatch.setattr(runner, "step_function", lambda entry: step)
    found = flows.find_step(env.config, "new-kubelet", "kubelet-version")
    assert found is not None
    assert runner.run_step(*found, env.config, None, env.paths) == 0
    assert seen == [False] and _lock_is_free(lock)


def test_the_annotation_lets_go_of_the_run_lock_while_it_waits(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    # it waits up to an hour for the operator and takes the node-wide lock itself: holding the run
    # lock meanwhile could deadlock with a step of its flow that holds the node-wide lock
    env.begin("new-os")
    seen: list[bool] = []
    lock = env.paths.state_dir / "new-os.lock"

    def step(ctx: Context, **params: object) -> Record:
        seen.append(_lock_is_free(lock))
        return KubernetesVersion(KUBE, "x")

    monkeypatch.setattr(runner, "step_function", lambda entry: step)
    found = flows.find_step(env.config, "new-os", "annotate")
    assert found is not None and runner.waits_for_others(found[1])
    assert runner.run_step(*found, env.config, None, env.paths) == 0
    assert seen == [True]


def test_a_step_sweeps_what_dead_writers_left_before_it_begins(env: StepEnv) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    stale = env.paths.next_profile.parent / f".next-profile.{dead_pid()}.abcd1234.tmp"
    env.write(stale, "half")
    found = flows.find_step(env.config, "new-kubelet", "kubelet-version")
    assert found is not None
    assert runner.run_step(*found, env.config, None, env.paths) == 0
    assert not stale.exists()


def test_a_killed_sysext_step_leaves_no_half_image_no_half_cached_file_and_no_loose_link(
        env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    env.configure({"runtime.backend": "sysext",
                         "sysext.images_url": "http://127.0.0.1:9/{{.Name}}-{{.Version}}-{{.Arch}}.raw"})
    env.begin("bootstrap")
    dead = dead_pid()
    half = env.write(env.paths.image_store / "docker" / f".docker-24.0.9-x86-64.raw.{dead}.k2j4h1.tmp", "half")
    # the verified checksum list and the images' extension-releases are cached beside the manifests
    cached = [env.write(env.paths.cache_dir / "sysext" / f".SHA256SUMS.{dead}.k2j4h1.tmp", "half"),
              env.write(env.paths.cache_dir / "sysext" / f".docker-24.0.9-x86-64.raw.release.{dead}.k2j4h1.tmp", "")]
    loose = env.paths.extensions_dir / f".docker.raw.{dead}.link"
    loose.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/opt/extensions/docker/docker-24.0.9-x86-64.raw", loose)
    assert _stopped(env, monkeypatch, "bootstrap", "extension", **KILLED) == 0
    assert not half.exists() and not loose.is_symlink()
    assert [p for p in cached if p.exists()] == []
    run = load_run(env.paths, "bootstrap")
    assert run is not None and run.failed_step == "extension"


# --- a flow started again continues its failed run ---------------------------------------------------------

def test_a_step_of_a_failed_run_reopens_it_a_follower_does_not(env: StepEnv) -> None:
    state = env.begin("bootstrap")
    state.step_failed("kubelet-env", "killed")
    run = state.resume("finish", reopen=True)
    assert (run.result, run.failed_step, run.failure) == (RUNNING, None, None)
    assert run.previous_failure == "this run failed at kubelet-env: killed; finish continues it"

    other = env.begin("new-kubelet")
    other.step_failed("addons", "bucket down")
    assert other.resume("recheck").result == FAILED


@pytest.mark.parametrize("backend", ["torcx", "sysext"])
def test_the_clean_up_looks_where_the_flow_table_says_the_steps_write(env: StepEnv, backend: str) -> None:
    """One table: every directory a step's sandbox may write is swept, with
    the directories the steps make below it (a versioned store, a flow's
    state, a cache kind's board), and nothing the table does not name."""
    env.configure({"runtime.backend": backend})
    versioned = env.paths.user_store / CURRENT_OS
    board = env.paths.cache_dir / "manifests" / "amd64-usr"
    for directory in (versioned, board, env.paths.state_dir / "new-os"):
        directory.mkdir(parents=True)
    swept = set(cleanup.write_directories(env.config, env.paths))
    declared = {env.paths.at(path) for flow in flows.all_flows(env.config) for step in (*flow.steps, *flow.followers)
                for path in (*flows.STATE_WRITES, *step.writes)}
    assert declared <= swept
    assert {board, env.paths.state_dir / "new-os"} <= swept
    assert (versioned in swept) == (backend == "torcx")  # the sysext steps write no torcx store
    assert env.config.kubernetes.kubelet_env.parent in swept  # a configured path, as the node names it
    assert all(any(d == top or top in d.parents for top in declared) for d in swept)
