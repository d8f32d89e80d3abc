"""update_engine over the D-Bus system bus (pystemd).

The client subscribes to ``StatusUpdate`` before calling ``AttemptUpdate``
and reads ``GetStatus`` after, so it never misses a transition and never takes
an ``IDLE`` from before its own attempt for the end of it. Deciding what a
sequence of statuses means is a pure function.

On Flatcar and Container Linux ``update-engine.service`` is a plain unit,
not started by D-Bus activation: until it owns its bus name, a call to it
fails at once. The OS-update step is ordered after the unit and first waits
for the name (``wait_for_engine``), so that an engine still starting is not
taken for an update that failed.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
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
#: The bus itself, which knows whether a name has an owner.
BUS_DRIVER = (b"org.freedesktop.DBus", b"/org/freedesktop/DBus", b"org.freedesktop.DBus")
#: The longest wait for update_engine's bus name: systemd's default start
#: timeout (DefaultTimeoutStartSec), by which a starting unit is up or failed.
NAME_WAIT_SECS = 90.0
NAME_POLL_SECS = 0.5
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


def engine_on_bus() -> bool:
    """Whether update_engine owns its bus name now, as the bus says."""
    from pystemd.dbuslib import apply_signature

    with _bus() as bus:
        try:
            reply = bus.call_method(*BUS_DRIVER, b"NameHasOwner", apply_signature(b"s", [DESTINATION]))
        except Exception as err:  # pystemd's DBusBaseError subclasses
            raise UpdateEngineError(f"the system bus did not answer NameHasOwner: {err}") from None
    return bool(reply.body)


def wait_for_engine(timeout_secs: float, *, on_bus: Callable[[], bool] | None = None,
                    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once update_engine owns its bus name (``on_bus``, by default
    engine_on_bus), or fail when it has not within ``timeout_secs``."""
    owned = on_bus or engine_on_bus
    if owned():
        return
    log.info("waiting up to %gs for update_engine's bus name %s", timeout_secs, DESTINATION.decode())
    deadline = clock() + timeout_secs
    while clock() < deadline:
        sleep(NAME_POLL_SECS)
        if owned():
            return
    raise UpdateEngineError(f"update_engine's bus name {DESTINATION.decode()} did not appear within "
                            f"{timeout_secs:g} s: is update-engine.service running?")


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
