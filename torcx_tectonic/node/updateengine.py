"""update_engine over the D-Bus system bus (pystemd).

The client subscribes to ``StatusUpdate`` before calling ``AttemptUpdate``
and reads ``GetStatus`` after, so it never misses a transition and never takes
an ``IDLE`` from before its own attempt for the end of it. Deciding what a
sequence of statuses means is a pure function.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TorcxTectonicError

log = logging.getLogger(__name__)

DESTINATION = b"com.coreos.update1"
OBJECT_PATH = b"/com/coreos/update1"
INTERFACE = b"com.coreos.update1.Manager"

IDLE = "UPDATE_STATUS_IDLE"
CHECKING = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
ERROR_EVENT = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
OPERATIONS = (
    IDLE, CHECKING, "UPDATE_STATUS_UPDATE_AVAILABLE", "UPDATE_STATUS_DOWNLOADING", "UPDATE_STATUS_VERIFYING",
    "UPDATE_STATUS_FINALIZING", NEED_REBOOT, ERROR_EVENT,
)
WAIT_SLICE_USECS = 500_000
UNKNOWN_VERSIONS = ("", "0.0.0.0")


class UpdateEngineError(TorcxTectonicError):
    """update_engine is unreachable, answered nonsense or took too long."""


@dataclass(frozen=True)
class Status:
    last_checked_time: int
    progress: float
    current_operation: str
    new_version: str
    new_size: int

    @classmethod
    def from_body(cls, body: Sequence[Any]) -> Status:
        if len(body) != 5:
            raise UpdateEngineError(f"update_engine status has {len(body)} values; expected 5")
        checked, progress, operation, version, size = body
        operation = operation.decode() if isinstance(operation, bytes) else str(operation)
        version = version.decode() if isinstance(version, bytes) else str(version)
        if operation not in OPERATIONS:
            known = ", ".join(OPERATIONS)
            raise UpdateEngineError(f"update_engine reports unknown operation {operation!r}; known: {known}")
        return cls(int(checked), float(progress), operation, version, int(size))

    @property
    def update_applied(self) -> bool:
        return self.current_operation == NEED_REBOOT

    @property
    def pending_version(self) -> str | None:
        """The next OS version when an update waits for a reboot. update_engine
        says 0.0.0.0 when it does not know it (e.g. restarted after the update)."""
        if not self.update_applied or self.new_version in UNKNOWN_VERSIONS:
            return None
        return self.new_version


class Outcome(enum.Enum):
    UPDATED = "updated"
    NO_UPDATE = "no-update"
    FAILED = "failed"


def attempt_outcome(seen: Sequence[Status]) -> tuple[Outcome, Status] | None:
    """What the statuses seen since an attempt began (in order) mean, or None
    while it is still running. An IDLE counts as the end only after the
    engine was seen busy, so an earlier IDLE is never taken for the end."""
    busy = failed = False
    for status in seen:
        if status.current_operation == NEED_REBOOT:
            return Outcome.UPDATED, status
        if status.current_operation == IDLE:
            if busy:
                return (Outcome.FAILED if failed else Outcome.NO_UPDATE), status
            continue
        busy = True
        failed = failed or status.current_operation == ERROR_EVENT
    return None


def _bus() -> Any:
    from pystemd.dbuslib import DBus  # imported here: only the steps that talk to D-Bus pay for it

    return DBus()


def _call(bus: Any, method: bytes) -> Any:
    try:
        return bus.call_method(DESTINATION, OBJECT_PATH, INTERFACE, method, [])
    except Exception as err:  # pystemd raises DBusBaseError subclasses with the D-Bus error name
        raise UpdateEngineError(
            f"update_engine {method.decode()} failed: {err}",
            hint="is update-engine.service running on the system bus?",
        ) from None


def get_status() -> Status:
    with _bus() as bus:
        return Status.from_body(_call(bus, b"GetStatus").body)


def reset_status() -> None:
    """Clear an error state so the next attempt starts from IDLE."""
    with _bus() as bus:
        _call(bus, b"ResetStatus")


def attempt_update(timeout_secs: float) -> tuple[Outcome, Status]:
    """Ask for an update and wait until it ends (or the timeout passes)."""
    seen: list[Status] = []

    def on_signal(msg: Any, error: Any = None, userdata: Any = None) -> None:
        msg.process_reply(False)
        status = Status.from_body(msg.body)
        log.info("update_engine: %s %s", status.current_operation, status.new_version or "")
        seen.append(status)

    with _bus() as bus:
        bus.match_signal(DESTINATION, OBJECT_PATH, INTERFACE, b"StatusUpdate", on_signal)
        _call(bus, b"AttemptUpdate")
        seen.insert(0, Status.from_body(_call(bus, b"GetStatus").body))
        deadline = time.monotonic() + timeout_secs
        while True:
            while not bus.process().is_empty():
                pass
            result = attempt_outcome(seen)
            if result:
                return result
            if time.monotonic() > deadline:
                last = seen[-1].current_operation
                raise UpdateEngineError(f"update_engine did not finish within {timeout_secs:.0f}s (last state {last})")
            bus.wait(WAIT_SLICE_USECS)
