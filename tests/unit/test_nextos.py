"""Step next-os: the running OS (from the node's os-release) and the one
that boots next (from update_engine), optionally forcing an update first.

update_engine is reached over the D-Bus system bus, which a unit test has
not: its three calls (attempt_update, get_status, reset_status) and whether
it owns its bus name (engine_on_bus) are the stand-in; the os-release file is real, under the node root.
"""

from __future__ import annotations

from typing import Any

import pytest

from torcx_tectonic.errors import InputError, TorcxTectonicError
from torcx_tectonic.node import updateengine
from torcx_tectonic.node.updateengine import Outcome, Status, UpdateEngineError
from torcx_tectonic.state import OsVersions
from torcx_tectonic.steps.nextos import os_versions, update_with_retries

from .helpers import Clock
from .stepenv import BOARD, CURRENT_OS, NEXT_OS, StepEnv


class FakeEngine:
    """update_engine as the step sees it: scripted attempts, a status, resets counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, attempts: list[Any], status: Any = None) -> None:
        self.attempts, self.status, self.resets = list(attempts), status, 0
        self.timeouts: list[float] = []
        self.status_reads = 0
        #: whether update_engine owns its bus name
        self.on_bus = True
        monkeypatch.setattr("torcx_tectonic.node.updateengine.engine_on_bus", lambda: self.on_bus)
        monkeypatch.setattr("torcx_tectonic.node.updateengine.attempt_update", self.attempt_update)
        monkeypatch.setattr("torcx_tectonic.node.updateengine.get_status", self.get_status)
        monkeypatch.setattr("torcx_tectonic.node.updateengine.reset_status", self.reset_status)

    def attempt_update(self, timeout: float) -> Any:
        self.timeouts.append(timeout)
        result = self.attempts.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    def get_status(self) -> Any:
        self.status_reads += 1
        if isinstance(self.status, Exception):
            raise self.status
        return self.status

    def reset_status(self) -> None:
        self.resets += 1


def _status(operation: str, version: str = "") -> Status:
    return Status(0, 1.0, operation, version, 0)


UPDATED = (Outcome.UPDATED, _status(updateengine.NEED_REBOOT, NEXT_OS))
NO_UPDATE = (Outcome.NO_UPDATE, _status(updateengine.IDLE))
FAILED = (Outcome.FAILED, _status(updateengine.IDLE))


def _bootstrap(env: StepEnv, **settings: str) -> OsVersions:
    """The bootstrap step with upgrade_os=yes (the default): params from the flow table."""
    env.configure({f"bootstrap.{k}": v for k, v in settings.items()})
    ctx = env.context("bootstrap", "os-update")
    assert ctx.step.params == {"attempt_update": True, "engine_optional": False}
    return os_versions(ctx, **ctx.step.params)  # type: ignore[arg-type]


def _new_os(env: StepEnv) -> OsVersions:
    ctx = env.context("new-os", "os-version")
    assert ctx.step.params == {}
    return os_versions(ctx)


def test_a_bootstrap_update_installs_the_next_os(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [UPDATED])
    record = _bootstrap(env, os_update_timeout="120")
    assert record == OsVersions(board=BOARD, current=CURRENT_OS, next=NEXT_OS,
                                next_source="update_engine (an update is applied and waits for a reboot)",
                                update="updated")
    assert engine.timeouts == [120.0] and engine.resets == 0


def test_a_bootstrap_without_update_stays_on_the_running_os(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [NO_UPDATE])
    record = _bootstrap(env)
    assert (record.current, record.next, record.update, record.update_failures, record.warning) == (
        CURRENT_OS, None, "no-update", (), None)
    assert record.next_source == "update_engine (no update pending)"


def test_failed_updates_are_retried_then_the_running_os_is_kept_with_a_warning(
        env: StepEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, UpdateEngineError("D-Bus gone"), FAILED])
    record = _bootstrap(env)
    assert (record.next, record.update) == (None, "failed")
    assert record.update_failures == ("update_engine reported an error event (attempt 1)", "D-Bus gone",
                                      "update_engine reported an error event (attempt 3)")
    assert record.warning == ("OS update failed 3 time(s): update_engine reported an error event (attempt 1); "
                              "D-Bus gone; update_engine reported an error event (attempt 3); continuing on the "
                              "running OS 1632.3.0; the new-OS flow will handle the next update")
    assert engine.resets == 3 and engine.attempts == []
    assert record.warning in caplog.text


def test_a_later_attempt_may_succeed(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, UPDATED])
    record = _bootstrap(env)
    assert (record.next, record.update, record.update_failures, record.warning) == (
        NEXT_OS, "updated", ("update_engine reported an error event (attempt 1)",), None)
    assert engine.resets == 1


def test_failed_updates_fail_the_step_when_configured(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, FAILED])
    with pytest.raises(TorcxTectonicError) as caught:
        _bootstrap(env, os_update_failure="fail", os_update_attempts="2")
    message = str(caught.value)
    assert message.startswith("OS update failed 2 time(s)")
    assert message.endswith("(set [bootstrap] os_update_failure=continue to go on)")
    assert engine.attempts == []


def test_an_engine_that_never_owns_its_bus_name_is_a_failed_update_without_attempts(
        env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [UPDATED])
    engine.on_bus = False
    clock, wait = Clock(), updateengine.wait_for_engine
    monkeypatch.setattr("torcx_tectonic.node.updateengine.wait_for_engine",
                        lambda timeout: wait(timeout, clock=clock, sleep=clock.sleep))
    record = _bootstrap(env, os_update_timeout="20")  # the wait is capped by one attempt's timeout
    missing = ("update_engine's bus name com.coreos.update1 did not appear within 20 s: is update-engine.service "
               "running?")
    assert (record.next, record.update, record.update_failures) == (None, "failed", (missing,))
    assert record.warning is not None and record.warning.startswith(f"OS update failed 1 time(s): {missing}; ")
    assert engine.timeouts == [] and engine.attempts == [UPDATED]  # update_engine was never asked
    assert sum(clock.sleeps) == 20


def test_the_wait_for_the_bus_name_is_capped_by_an_attempts_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [NO_UPDATE, NO_UPDATE])
    waits: list[float] = []
    monkeypatch.setattr("torcx_tectonic.node.updateengine.wait_for_engine", waits.append)
    update_with_retries(1, 5.0)
    update_with_retries(1, 3600.0)
    assert waits == [5.0, updateengine.NAME_WAIT_SECS]


def test_update_with_retries_tries_at_least_once(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [NO_UPDATE])
    assert update_with_retries(0, 5.0) == (Outcome.NO_UPDATE, NO_UPDATE[1], ())
    assert engine.timeouts == [5.0]


def test_a_failing_reset_does_not_stop_the_retries(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [FAILED, UPDATED])

    def reset_fails() -> None:
        engine.resets += 1
        raise UpdateEngineError("ResetStatus failed")

    monkeypatch.setattr("torcx_tectonic.node.updateengine.reset_status", reset_fails)
    assert _bootstrap(env).next == NEXT_OS


@pytest.mark.parametrize(("status", "expected"), [
    (_status(updateengine.NEED_REBOOT, NEXT_OS), NEXT_OS),
    (_status(updateengine.NEED_REBOOT, CURRENT_OS), None),
    (_status("UPDATE_STATUS_DOWNLOADING", NEXT_OS), None),
    (_status(updateengine.IDLE), None),
], ids=["pending", "pending-is-current", "not-finished", "idle"])
def test_the_new_os_flow_reads_the_pending_update(env: StepEnv, monkeypatch: pytest.MonkeyPatch, status: Status,
                                                  expected: str | None) -> None:
    engine = FakeEngine(monkeypatch, [], status=status)
    record = _new_os(env)
    assert (record.current, record.next, record.update) == (CURRENT_OS, expected, None)
    assert engine.timeouts == []  # no update is forced


def test_the_pending_version_must_be_an_os_version(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=_status(updateengine.NEED_REBOOT, "../1688.5.3"))
    with pytest.raises(InputError, match="update_engine new_version: OS version '../1688.5.3' is not"):
        _new_os(env)


def test_an_unreachable_update_engine_fails_the_new_os_flow(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=UpdateEngineError("update_engine GetStatus failed"))
    with pytest.raises(UpdateEngineError, match="GetStatus failed"):
        _new_os(env)


def test_a_bootstrap_told_not_to_update_carries_on_without_update_engine(env: StepEnv,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    engine = FakeEngine(monkeypatch, [], status=UpdateEngineError("update_engine GetStatus failed"))
    env.configure({"bootstrap.upgrade_os": "no"})
    ctx = env.context("bootstrap", "os-update")
    assert ctx.step.params == {"attempt_update": False, "engine_optional": True}
    record = os_versions(ctx, **ctx.step.params)  # type: ignore[arg-type]
    assert (record.next, record.next_source, record.update) == (None, "none (update_engine unreachable)", None)
    assert engine.status_reads == 1 and engine.timeouts == []


@pytest.mark.parametrize("flow", ["bootstrap", "new-os"])
def test_an_applied_update_of_unknown_version_fails_the_step(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                            flow: str) -> None:
    # update_engine reports 0.0.0.0 after a restart with the update applied: the
    # next OS cannot be prepared, so the step must not pretend there is no update.
    unknown = _status(updateengine.NEED_REBOOT, "0.0.0.0")
    FakeEngine(monkeypatch, [(Outcome.UPDATED, unknown)], status=unknown)
    with pytest.raises(TorcxTectonicError, match="applied an OS update but reports its version as '0.0.0.0'"):
        _bootstrap(env) if flow == "bootstrap" else _new_os(env)


def test_the_running_os_comes_from_the_node_os_release(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=_status(updateengine.IDLE))
    env.set_os("1745.7.0", board="arm64-usr")
    env.write(env.at("/etc/os-release"), "VERSION_ID=9999.0.0\n")  # torcx keys its stores by /usr/lib only
    record = _new_os(env)
    assert (record.board, record.current) == ("arm64-usr", "1745.7.0")


def test_a_broken_os_release_fails_the_step(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeEngine(monkeypatch, [], status=_status(updateengine.IDLE))
    env.write(env.paths.os_release, "ID=coreos\n")
    with pytest.raises(InputError, match="os-release: VERSION_ID is missing"):
        _new_os(env)
