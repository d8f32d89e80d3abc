"""The systemd manager over D-Bus (pystemd): enable, start, reboot.

Steps run as units, so they ask PID 1 rather than spawning systemctl; jobs
are queued without waiting (a step must not wait for a unit ordered after it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import TorcxTectonicError


def _manager() -> Any:
    from pystemd.systemd1 import Manager  # heavy import, only for the steps that need it

    manager = Manager()
    manager.load()
    return manager


def _unit(name: str) -> Any:
    from pystemd.systemd1 import Unit  # heavy import, only for the steps that need it

    unit = Unit(name.encode())
    unit.load()
    return unit


def _call(what: str, method: str, *args: Any) -> Any:
    try:
        manager = _manager()
        return getattr(manager.Manager, method)(*args)
    except TorcxTectonicError:
        raise
    except Exception as err:  # pystemd raises DBusBaseError subclasses
        raise TorcxTectonicError(f"systemd: {what} failed: {err}") from None


def enable(unit: str) -> bool:
    """Enable a unit file (persistently) for the next boot; returns whether
    anything changed. No daemon-reload: a reload while the boot transaction
    runs drops the jobs of the later steps, and the links only matter at the
    next boot (units started now are started explicitly)."""
    _, changes = _call(f"enable {unit}", "EnableUnitFiles", [unit.encode()], False, True)
    return bool(changes)


def start(unit: str) -> None:
    _call(f"start {unit}", "StartUnit", unit.encode(), b"replace")


def stop(unit: str) -> None:
    _call(f"stop {unit}", "StopUnit", unit.encode(), b"replace")


def restart(unit: str) -> None:
    _call(f"restart {unit}", "RestartUnit", unit.encode(), b"replace")


def reboot() -> None:
    """Queue a clean reboot, the way `systemctl reboot` does."""
    _call("reboot", "StartUnit", b"reboot.target", b"replace-irreversibly")


def unit_states(units: Sequence[str]) -> dict[str, str]:
    """ActiveState of units, from the manager over D-Bus ("unknown" without it)."""
    states = {}
    for name in units:
        try:
            unit = _unit(name)
            states[name] = unit.Unit.ActiveState.decode()
        except Exception:  # no bus, no permission: the rest of the status still stands
            states[name] = "unknown"
    return states
