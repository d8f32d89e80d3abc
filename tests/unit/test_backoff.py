"""backoff: a new-OS flow whose runs keep failing waits longer and longer, with jitter, before it tries again.

The pause is a pure function; the hold is written by the step that ends a
failed run (through the real runner, on a node under a temporary root);
the retry unit's wait runs over a fake clock, with PID 1's start recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from torcx_tectonic import flows
from torcx_tectonic.commands.cli import render_text
from torcx_tectonic.commands.status import gather
from torcx_tectonic.state import FAILED, OK, OsVersions, load_run
from torcx_tectonic.steps import backoff, runner

from .helpers import Clock, make_config
from .stepenv import CURRENT_OS, NEXT_OS, StepEnv

UNITS = make_config({"units.backoff_delay": "600", "units.backoff_max_delay": "7200"}).units
LOW, HIGH = (lambda: 0.0), (lambda: 0.999999)
HOUR = 3600.0


@pytest.mark.parametrize(("failed", "full"), [(1, 600), (2, 1200), (3, 2400), (4, 4800), (5, 7200), (60, 7200)])
def test_the_pause_doubles_up_to_the_cap_and_is_half_to_all_of_it(failed: int, full: float) -> None:
    assert backoff.pause(failed, UNITS, LOW) == full / 2
    assert full * 0.99 < backoff.pause(failed, UNITS, HIGH) <= full


def test_nodes_that_failed_together_spread_out() -> None:
    draws = iter([i / 100 for i in range(100)])
    pauses = {round(backoff.pause(3, UNITS, lambda: next(draws))) for _ in range(100)}
    assert len(pauses) == 100 and min(pauses) == 1200 and max(pauses) <= 2400


def runs_in(seconds: float, run_secs: float, rand: Callable[[], float]) -> int:
    """Runs a node makes in ``seconds`` when each fails after ``run_secs`` and then backs off."""
    now, runs = 0.0, 0
    while now < seconds:
        runs += 1
        now += run_secs + backoff.pause(runs, UNITS, rand)
    return runs


def test_an_hour_of_failures_is_a_handful_of_runs_not_a_storm() -> None:
    # each run of the default settings retries its network step for 7.5 minutes before it fails
    assert runs_in(HOUR, 450, LOW) == 4  # the shortest pauses: 5, 10 and 20 minutes after the runs
    assert runs_in(HOUR, 450, HIGH) == 3
    assert runs_in(HOUR, 450, LOW) < HOUR / 450  # back to back, the path unit made 8


def failed_run(env: StepEnv) -> int:
    """A new-OS run that fails at its Kubernetes step (no kubelet.env), through the runner."""
    env.begin("new-os", OsVersions("amd64-usr", CURRENT_OS, NEXT_OS, "update_engine"))
    found = flows.find_step(env.config, "new-os", "kubelet-version")
    assert found is not None
    return runner.run_step(found[0], found[1], env.config, None, env.paths)


def test_a_failed_run_records_its_next_try_and_holds_the_flow(env: StepEnv) -> None:
    assert failed_run(env) == 1
    run = load_run(env.paths, "new-os")
    assert run is not None and run.result == FAILED and run.failed_in_a_row == 1
    assert run.finished is not None and run.next_try is not None
    assert 300 <= run.next_try - run.finished <= 600  # backoff_delay 600: half to all of it
    held = backoff.hold_path(env.paths, "new-os")
    assert held.read_text().startswith("new-os backs off after 1 failed run(s) in a row until ")
    # the file the generated retry unit is conditioned on
    flow = next(f for f in flows.all_flows(env.config) if f.name == "new-os")
    assert flow.backoff_file == "/run/torcx-tectonic/new-os.backoff" == env.paths.on_node(held)


def test_a_run_that_begins_ends_the_backoff(env: StepEnv) -> None:
    failed_run(env)
    found = flows.find_step(env.config, "new-os", "os-version")
    assert found is not None
    runner.run_step(found[0], found[1], env.config, None, env.paths)  # no update_engine here: it fails again
    run = load_run(env.paths, "new-os")
    assert run is not None and run.failed_in_a_row == 2
    assert backoff.hold_path(env.paths, "new-os").read_text().startswith("new-os backs off after 2 failed run(s)")


def test_failures_in_a_row_are_counted_and_a_success_starts_again_from_zero(env: StepEnv) -> None:
    for expected in (1, 2, 3):
        assert failed_run(env) == 1
        found = load_run(env.paths, "new-os")
        assert found is not None and found.failed_in_a_row == expected
        run = found
    assert run.next_try is not None and run.finished is not None and run.next_try - run.finished >= 1200
    state = env.begin("new-os")
    assert state.current().failed_in_a_row == 3
    ended = state.step_succeeded("os-version", ends_run=True)
    assert (ended.result, ended.failed_in_a_row, ended.next_try) == (OK, 0, None)


def test_a_flow_without_backoff_holds_nothing(env: StepEnv) -> None:
    env.begin("new-kubelet")
    found = flows.find_step(env.config, "new-kubelet", "kubelet-version")
    assert found is not None
    assert runner.run_step(found[0], found[1], env.config, None, env.paths) == 1
    run = load_run(env.paths, "new-kubelet")
    assert run is not None and run.next_try is None
    assert not backoff.hold_path(env.paths, "new-kubelet").exists()


def test_the_status_says_when_the_next_try_is_and_how_to_try_now(env: StepEnv) -> None:
    failed_run(env)
    text = render_text(gather(env.config, env.paths, units=lambda _: {}))
    line = next(line for line in text.splitlines() if "backing off" in line)
    assert "backing off after 1 failed run(s) in a row: next try at " in line
    assert "`torcx-tectonic retry new-os` tries now" in line


def new_os(env: StepEnv) -> flows.Flow:
    return next(f for f in flows.all_flows(env.config) if f.name == "new-os")


def test_the_retry_unit_waits_until_the_next_try_then_starts_the_flow(env: StepEnv) -> None:
    failed_run(env)
    run = load_run(env.paths, "new-os")
    assert run is not None and run.finished is not None and run.next_try is not None
    clock, started = Clock(run.finished), list[str]()
    assert backoff.wait_and_retry(new_os(env), env.paths, clock=clock.time, sleep=clock.sleep,
                                  start=started.append) is True
    assert started == ["torcx-new-os.target"]
    assert clock.now >= run.next_try and all(s <= backoff.LOOK_SECS for s in clock.sleeps)
    assert backoff.hold_path(env.paths, "new-os").exists()  # until the run it started begins


def test_the_retry_unit_starts_nothing_once_the_backoff_ended_otherwise(env: StepEnv) -> None:
    failed_run(env)
    run = load_run(env.paths, "new-os")
    assert run is not None and run.finished is not None
    held = backoff.hold_path(env.paths, "new-os")
    started: list[str] = []
    clock = Clock(run.finished)

    def operator_retries(seconds: float) -> None:  # meanwhile `torcx-tectonic retry new-os` ended it
        clock.sleep(seconds)
        held.unlink(missing_ok=True)

    assert backoff.wait_and_retry(new_os(env), env.paths, clock=clock.time, sleep=operator_retries,
                                  start=started.append) is False
    assert started == [] and len(clock.sleeps) == 1


def test_retry_now_stops_the_wait_ends_the_backoff_and_starts_the_flow(env: StepEnv) -> None:
    failed_run(env)
    asked: list[str] = []
    assert backoff.retry_now(new_os(env), env.paths, stop=lambda u: asked.append(f"stop {u}"),
                             start=lambda u: asked.append(f"start {u}")) is True
    assert asked == ["stop torcx-new-os-retry.service", "start torcx-new-os.target"]
    assert not backoff.hold_path(env.paths, "new-os").exists()
