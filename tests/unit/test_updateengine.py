"""updateengine: what a sequence of statuses means, parsing GetStatus/StatusUpdate bodies, and the
wait for update_engine's bus name."""

from __future__ import annotations

from typing import Any

import pytest

from torcx_tectonic.node import updateengine
from torcx_tectonic.node.updateengine import (
    CHECKING,
    ERROR_EVENT,
    IDLE,
    NEED_REBOOT,
    Outcome,
    Status,
    UpdateEngineError,
)

from .helpers import Clock

DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
VERIFYING = "UPDATE_STATUS_VERIFYING"
FINALIZING = "UPDATE_STATUS_FINALIZING"


def s(operation: str, version: str = "") -> Status:
    return Status(1_600_000_000, 0.0, operation, version, 0)


@pytest.mark.parametrize(
    ("operations", "expected"),
    [
        ([], None),
        ([IDLE], None),
        ([IDLE, IDLE], None),
        ([IDLE, CHECKING], None),
        ([CHECKING, AVAILABLE, DOWNLOADING, VERIFYING, FINALIZING], None),
        ([IDLE, CHECKING, IDLE], (Outcome.NO_UPDATE, 2)),
        ([CHECKING, IDLE], (Outcome.NO_UPDATE, 1)),
        ([IDLE, CHECKING, DOWNLOADING, ERROR_EVENT, IDLE], (Outcome.FAILED, 4)),
        ([CHECKING, ERROR_EVENT, IDLE, CHECKING, IDLE], (Outcome.FAILED, 2)),
        ([ERROR_EVENT], None),
        ([IDLE, CHECKING, AVAILABLE, DOWNLOADING, VERIFYING, FINALIZING, NEED_REBOOT], (Outcome.UPDATED, 6)),
        ([NEED_REBOOT], (Outcome.UPDATED, 0)),
        ([IDLE, NEED_REBOOT], (Outcome.UPDATED, 1)),
        ([CHECKING, NEED_REBOOT, IDLE], (Outcome.UPDATED, 1)),
    ],
    ids=[
        "nothing-seen",
        "earlier-idle-ignored",
        "only-idles",
        "still-checking",
        "still-running",
        "idle-after-busy-is-no-update",
        "checking-then-idle",
        "error-then-idle-failed",
        "first-end-counts",
        "error-not-yet-idle",
        "need-reboot-is-updated",
        "already-updated",
        "idle-then-updated",
        "updated-wins-over-later-idle",
    ],
)
def test_attempt_outcome(operations: list[str], expected: tuple[Outcome, int] | None) -> None:
    seen = [s(op, f"v{i}") for i, op in enumerate(operations)]
    result = updateengine.attempt_outcome(seen)
    if expected is None:
        assert result is None
    else:
        outcome, index = expected
        assert result == (outcome, seen[index])


@pytest.mark.parametrize(
    "body",
    [
        [1_600_000_000, 0.5, "UPDATE_STATUS_DOWNLOADING", "", 1234],
        [1_600_000_000, 0.5, b"UPDATE_STATUS_DOWNLOADING", b"", 1234],
        (1_600_000_000, 0.5, "UPDATE_STATUS_DOWNLOADING", "", 1234),
    ],
    ids=["str", "bytes", "tuple"],
)
def test_status_from_body(body: Any) -> None:
    assert Status.from_body(body) == Status(1_600_000_000, 0.5, DOWNLOADING, "", 1234)


def test_pending_version_only_when_an_update_waits_for_a_reboot() -> None:
    assert Status.from_body([0, 1.0, NEED_REBOOT.encode(), b"1688.5.3", 10]).pending_version == "1688.5.3"
    assert s(NEED_REBOOT, "").pending_version is None
    assert s(NEED_REBOOT, "0.0.0.0").pending_version is None
    assert s(NEED_REBOOT, "0.0.0.0").update_applied
    assert not s(DOWNLOADING, "1688.5.3").update_applied
    assert s(DOWNLOADING, "1688.5.3").pending_version is None
    assert s(IDLE, "1688.5.3").pending_version is None


@pytest.mark.parametrize("operation", ["UPDATE_STATUS_BOGUS", "idle", "", "UPDATE_STATUS_IDLE "])
def test_status_rejects_unknown_operations(operation: str) -> None:
    with pytest.raises(UpdateEngineError) as caught:
        Status.from_body([0, 0.0, operation, "", 0])
    message = str(caught.value)
    assert f"update_engine reports unknown operation {operation!r}; known: UPDATE_STATUS_IDLE, " in message
    assert "UPDATE_STATUS_REPORTING_ERROR_EVENT" in message


@pytest.mark.parametrize("body", [[], [0, 0.0, IDLE, ""], [0, 0.0, IDLE, "", 0, "extra"]])
def test_status_rejects_wrong_arity(body: list[Any]) -> None:
    with pytest.raises(UpdateEngineError, match=f"update_engine status has {len(body)} values; expected 5"):
        Status.from_body(body)


def test_operations_are_the_eight_of_update_engine() -> None:
    assert set(updateengine.OPERATIONS) == {
        IDLE,
        CHECKING,
        AVAILABLE,
        DOWNLOADING,
        VERIFYING,
        FINALIZING,
        NEED_REBOOT,
        ERROR_EVENT,
    }


@pytest.mark.parametrize("polls_before", [0, 1, 5])
def test_the_wait_returns_once_update_engine_owns_its_bus_name(polls_before: int) -> None:
    answers = [False] * polls_before + [True]
    clock = Clock()
    updateengine.wait_for_engine(10, on_bus=lambda: answers.pop(0), clock=clock, sleep=clock.sleep)
    assert answers == [] and clock.sleeps == [updateengine.NAME_POLL_SECS] * polls_before


def test_a_bus_name_that_never_appears_fails_the_wait_when_its_time_is_up() -> None:
    asked: list[float] = []
    clock = Clock()

    def never() -> bool:
        asked.append(clock.now)
        return False

    with pytest.raises(UpdateEngineError) as caught:
        updateengine.wait_for_engine(3, on_bus=never, clock=clock, sleep=clock.sleep)
    assert str(caught.value) == ("update_engine's bus name com.coreos.update1 did not appear within 3 s: is "
                                 "update-engine.service running?")
    assert sum(clock.sleeps) == 3 and asked[-1] == 103.0  # asked once more when the time was up
