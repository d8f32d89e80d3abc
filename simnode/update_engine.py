#!/usr/bin/python3
"""Stand-in for Container Linux's update_engine, run inside a test node.

Why it exists: the product drives OS updates through update_engine's D-Bus
API (``com.coreos.update1``) and watches its ``StatusUpdate`` signal.  The
real daemon cannot run in a container (it rewrites partitions and talks to
Omaha), so the integration tests boot this script as ``update-engine.service``
on the node's real system bus.  It copies the parts of the real daemon's
behaviour a client can observe -- method semantics, signal ordering, the
``/run/update_engine_autoupdate_completed`` marker, the ``0.0.0.0``
placeholder version -- while a scenario file chosen by the test decides the
outcome of each ``AttemptUpdate``.

Scenario (JSON object; see :func:`parse_scenario`)::

    {"mode": "update", "new_version": "1688.5.3", "step_seconds": 0.2}

``mode`` is ``update`` (ends in ``UPDATED_NEED_REBOOT``), ``none`` (back to
``IDLE``), ``error`` (``REPORTING_ERROR_EVENT`` then ``IDLE``) or ``hang``
(stays in ``DOWNLOADING``), or a list of those used one per attempt (the last
one repeats), so a test can make the first attempts fail.

The pure state machine (:class:`Engine`) does not import D-Bus, so the test
harness on the host can import :func:`parse_scenario` to reject a bad
scenario before a node even boots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUS_NAME = "com.coreos.update1"
OBJECT_PATH = "/com/coreos/update1"
INTERFACE = "com.coreos.update1.Manager"

IDLE = "UPDATE_STATUS_IDLE"
CHECKING_FOR_UPDATE = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
UPDATE_AVAILABLE = "UPDATE_STATUS_UPDATE_AVAILABLE"
DOWNLOADING = "UPDATE_STATUS_DOWNLOADING"
VERIFYING = "UPDATE_STATUS_VERIFYING"
FINALIZING = "UPDATE_STATUS_FINALIZING"
UPDATED_NEED_REBOOT = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
REPORTING_ERROR_EVENT = "UPDATE_STATUS_REPORTING_ERROR_EVENT"

#: What the real daemon reports as ``new_version`` when it does not know one
#: (at start, and after a restart even while an update is pending).
UNKNOWN_VERSION = "0.0.0.0"

MODES = ("update", "none", "error", "hang")

#: Real location of the marker (``/var/run`` is a symlink to ``/run``).
MARKER = Path("/run/update_engine_autoupdate_completed")
#: Where the stand-in keeps what tests may want to assert on.
STATE_DIR = Path("/run/fake-update-engine")
#: Scenario files, first found wins: the ``/run`` one lets a test change the
#: outcome while the node runs, the ``/usr`` one is what the node booted with.
SCENARIO_FILES = (
    STATE_DIR / "scenario.json",
    Path("/usr/lib/fake-update-engine/scenario.json"),
)

INTROSPECTION_XML = f"""
<node>
  <interface name="{INTERFACE}">
    <method name="AttemptUpdate"/>
    <method name="ResetStatus"/>
    <method name="GetStatus">
      <arg name="last_checked_time" type="x" direction="out"/>
      <arg name="progress" type="d" direction="out"/>
      <arg name="current_operation" type="s" direction="out"/>
      <arg name="new_version" type="s" direction="out"/>
      <arg name="new_size" type="x" direction="out"/>
    </method>
    <signal name="StatusUpdate">
      <arg name="last_checked_time" type="x"/>
      <arg name="progress" type="d"/>
      <arg name="current_operation" type="s"/>
      <arg name="new_version" type="s"/>
      <arg name="new_size" type="x"/>
    </signal>
  </interface>
</node>
"""

log = logging.getLogger("fake-update-engine")


class ScenarioError(ValueError):
    """A scenario file or dict does not say what the stand-in should do."""


@dataclass(frozen=True)
class Scenario:
    """What the stand-in does on ``AttemptUpdate``.

    Kept as a validated value so a typo in a test fails loudly at the start
    instead of silently running the default outcome.
    """

    modes: tuple[str, ...] = ("none",)
    new_version: str = "9999.0.0"
    new_size: int = 123456789
    step_seconds: float = 0.2
    forget_version_on_restart: bool = False

    def mode_for_attempt(self, index: int) -> str:
        """Mode of the ``index``-th (0-based) started update; the last repeats."""
        return self.modes[min(index, len(self.modes) - 1)]

    def to_json(self) -> dict[str, Any]:
        """The JSON object that :func:`parse_scenario` reads back."""
        return {
            "mode": list(self.modes),
            "new_version": self.new_version,
            "new_size": self.new_size,
            "step_seconds": self.step_seconds,
            "forget_version_on_restart": self.forget_version_on_restart,
        }


def parse_scenario(raw: Mapping[str, Any], where: str = "scenario") -> Scenario:
    """Validate a scenario mapping; raise :class:`ScenarioError` saying what is wrong.

    Unknown keys are errors on purpose: a misspelt key would otherwise be a
    test that silently tests something else.
    """
    known = {"mode", "new_version", "new_size", "step_seconds", "forget_version_on_restart"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    mode = raw.get("mode", "none")
    modes: tuple[str, ...]
    if isinstance(mode, str):
        modes = (mode,)
    elif isinstance(mode, list) and mode and all(isinstance(m, str) for m in mode):
        modes = tuple(mode)
    else:
        raise ScenarioError(f"{where}: 'mode' must be a string or a non-empty list of strings, got {mode!r}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ScenarioError(f"{where}: unknown mode(s) {bad}; expected one of {list(MODES)}")
    new_version = raw.get("new_version", Scenario.new_version)
    # "" is allowed: an engine that reports UPDATED_NEED_REBOOT with an empty version (a fault to test)
    if not isinstance(new_version, str):
        raise ScenarioError(f"{where}: 'new_version' must be a string, got {new_version!r}")
    new_size = raw.get("new_size", Scenario.new_size)
    if not isinstance(new_size, int) or isinstance(new_size, bool) or new_size < 0:
        raise ScenarioError(f"{where}: 'new_size' must be a non-negative integer, got {new_size!r}")
    step = raw.get("step_seconds", Scenario.step_seconds)
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not 0 <= step <= 3600:
        raise ScenarioError(f"{where}: 'step_seconds' must be a number in [0, 3600], got {step!r}")
    forget = raw.get("forget_version_on_restart", False)
    if not isinstance(forget, bool):
        raise ScenarioError(f"{where}: 'forget_version_on_restart' must be a boolean, got {forget!r}")
    return Scenario(
        modes=modes,
        new_version=new_version,
        new_size=new_size,
        step_seconds=float(step),
        forget_version_on_restart=forget,
    )


def load_scenario(paths: Sequence[Path]) -> Scenario:
    """Read the first existing scenario file; the default scenario if none exists."""
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ScenarioError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        return parse_scenario(raw, str(path))
    return Scenario()


def write_atomically(path: Path, data: str) -> None:
    """Replace ``path`` in one step so a test never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def _read_int(path: Path) -> int:
    """A counter file's value; 0 when it is missing or unreadable."""
    try:
        return int(path.read_text(encoding="utf-8").strip() or 0)
    except (OSError, ValueError):
        return 0


@dataclass
class Status:
    """The five values of ``GetStatus`` and ``StatusUpdate``, in D-Bus order."""

    last_checked_time: int = 0
    progress: float = 0.0
    current_operation: str = IDLE
    new_version: str = UNKNOWN_VERSION
    new_size: int = 0

    def as_tuple(self) -> tuple[int, float, str, str, int]:
        """Values in the ``(xdssx)`` order of the D-Bus API."""
        return (
            self.last_checked_time,
            self.progress,
            self.current_operation,
            self.new_version,
            self.new_size,
        )


#: A step of an update: mutates the status; the engine then signals it.
Step = Callable[[Status], None]


@dataclass
class Engine:
    """update_engine's observable state machine, without any D-Bus.

    Why separate: the D-Bus glue stays a thin shell, and the ordering rules
    (signal ``CHECKING_FOR_UPDATE`` before ``AttemptUpdate`` returns; ignore
    ``AttemptUpdate`` while busy or updated) live in one readable place.
    ``emit`` sends ``StatusUpdate``; ``schedule(delay, fn)`` runs ``fn``
    later on the main loop.
    """

    emit: Callable[[Status], None]
    schedule: Callable[[float, Callable[[], None]], None]
    marker: Path = MARKER
    state_dir: Path = STATE_DIR
    scenario_files: Sequence[Path] = SCENARIO_FILES
    status: Status = field(default_factory=Status, init=False)
    started_updates: int = field(default=0, init=False)
    attempts: int = field(default=0, init=False)
    _generation: int = field(default=0, init=False)

    def start(self) -> None:
        """Pick up a pending update from the marker, as the real daemon does at start."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Counters survive a restart of the service (not a reboot: /run is a tmpfs).
        self.attempts = _read_int(self.state_dir / "attempts")
        self.started_updates = _read_int(self.state_dir / "started")
        self._write_counter()
        if self.marker.exists():
            try:
                scenario = load_scenario(self.scenario_files)
            except ScenarioError as exc:
                log.error("bad scenario, using defaults at start: %s", exc)
                scenario = Scenario()
            version = UNKNOWN_VERSION
            if not scenario.forget_version_on_restart:
                with contextlib.suppress(FileNotFoundError):
                    version = (self.state_dir / "new_version").read_text(encoding="utf-8").strip()
            self.status = Status(
                current_operation=UPDATED_NEED_REBOOT,
                new_version=version or UNKNOWN_VERSION,
            )
            log.info(
                "marker %s exists: starting in %s (new_version %s)",
                self.marker,
                UPDATED_NEED_REBOOT,
                self.status.new_version,
            )
        else:
            log.info("starting in %s", self.status.current_operation)
        self._write_status()

    def attempt_update(self) -> None:
        """Start an update if idle; otherwise do nothing, like the real daemon.

        Raises :class:`ScenarioError` when the scenario file is unusable, so
        the caller sees a D-Bus error instead of a silently wrong outcome.
        """
        self.attempts += 1
        self._write_counter()
        op = self.status.current_operation
        if op != IDLE:
            log.info("AttemptUpdate #%d ignored: status is %s", self.attempts, op)
            return
        scenario = load_scenario(self.scenario_files)
        mode = scenario.mode_for_attempt(self.started_updates)
        self.started_updates += 1
        self._write_counter()
        log.info("AttemptUpdate #%d: starting update #%d in mode %r", self.attempts, self.started_updates, mode)
        self._generation += 1
        self._set(CHECKING_FOR_UPDATE, progress=0.0)
        self._run(self._steps(mode, scenario), scenario.step_seconds, self._generation)

    def reset_status(self) -> bool:
        """Reset as the real daemon does: allowed when idle or updated, removes the marker.

        Like the real daemon it sends no ``StatusUpdate`` for this change.
        """
        op = self.status.current_operation
        log.info("ResetStatus from %s", op)
        if op == IDLE:
            return True
        if op == UPDATED_NEED_REBOOT:
            self.status.current_operation = IDLE
            self.marker.unlink(missing_ok=True)
            (self.state_dir / "new_version").unlink(missing_ok=True)
            self._write_status()
            return True
        log.error("Reset not allowed in state %s", op)
        return False

    def _steps(self, mode: str, scenario: Scenario) -> list[Step]:
        """The transitions after ``CHECKING_FOR_UPDATE`` for one mode."""

        def available(s: Status) -> None:
            s.current_operation = UPDATE_AVAILABLE
            s.last_checked_time = int(time.time())
            s.new_version = scenario.new_version
            s.new_size = scenario.new_size

        def downloading(progress: float) -> Step:
            def step(s: Status) -> None:
                s.current_operation = DOWNLOADING
                s.progress = progress

            return step

        def op(name: str) -> Step:
            def step(s: Status) -> None:
                s.current_operation = name
                s.progress = 0.0

            return step

        def no_update(s: Status) -> None:
            s.current_operation = IDLE
            s.last_checked_time = int(time.time())

        def need_reboot(s: Status) -> None:
            write_atomically(self.state_dir / "new_version", s.new_version + "\n")
            write_atomically(self.marker, "")
            s.current_operation = UPDATED_NEED_REBOOT
            s.progress = 0.0

        if mode == "none":
            return [no_update]
        fetch = [available, downloading(0.0), downloading(0.5), downloading(1.0)]
        if mode == "update":
            return [*fetch, op(VERIFYING), op(FINALIZING), need_reboot]
        if mode == "error":
            return [available, downloading(0.0), op(REPORTING_ERROR_EVENT), op(IDLE)]
        return [available, downloading(0.0)]  # "hang": never gets further

    def _run(self, steps: list[Step], delay: float, generation: int) -> None:
        """Apply the steps one per ``delay`` seconds, dropping them if superseded."""
        if not steps:
            return

        def fire() -> None:
            if generation != self._generation:
                return
            steps[0](self.status)
            self._changed()
            self._run(steps[1:], delay, generation)

        self.schedule(delay, fire)

    def _set(self, operation: str, *, progress: float) -> None:
        self.status.current_operation = operation
        self.status.progress = progress
        self._changed()

    def _changed(self) -> None:
        """Log, record and signal the current status."""
        s = self.status
        log.info(
            "status %s progress=%.2f new_version=%s new_size=%d last_checked=%d",
            s.current_operation,
            s.progress,
            s.new_version,
            s.new_size,
            s.last_checked_time,
        )
        self._write_status()
        self.emit(s)

    def _write_counter(self) -> None:
        write_atomically(self.state_dir / "attempts", f"{self.attempts}\n")
        write_atomically(self.state_dir / "started", f"{self.started_updates}\n")

    def _write_status(self) -> None:
        s = self.status
        write_atomically(
            self.state_dir / "status.json",
            json.dumps(
                {
                    "last_checked_time": s.last_checked_time,
                    "progress": s.progress,
                    "current_operation": s.current_operation,
                    "new_version": s.new_version,
                    "new_size": s.new_size,
                    "attempts": self.attempts,
                }
            )
            + "\n",
        )


def serve(bus: str, engine_args: Mapping[str, Any]) -> int:
    """Own ``com.coreos.update1`` on the bus and serve until SIGTERM/SIGINT.

    Uses Gio (python3-gi) rather than dbus-python: one dependency, a typed-enough
    API, and no need to subclass untyped classes.
    """
    from gi.repository import Gio, GLib  # type: ignore[import-untyped,unused-ignore]

    loop = GLib.MainLoop()
    node_info = Gio.DBusNodeInfo.new_for_xml(INTROSPECTION_XML)
    interface_info = node_info.interfaces[0]
    connection: list[Any] = []
    exit_code = [0]

    def emit(status: Status) -> None:
        if connection:
            connection[0].emit_signal(
                None,
                OBJECT_PATH,
                INTERFACE,
                "StatusUpdate",
                GLib.Variant("(xdssx)", status.as_tuple()),
            )

    def schedule(delay: float, fn: Callable[[], None]) -> None:
        def once() -> bool:
            fn()
            return False

        GLib.timeout_add(max(0, int(delay * 1000)), once)

    engine = Engine(emit=emit, schedule=schedule, **engine_args)

    def on_call(
        _conn: Any,
        sender: str,
        _path: str,
        _iface: str,
        method: str,
        _params: Any,
        invocation: Any,
    ) -> None:
        log.info("call %s from %s", method, sender)
        try:
            if method == "AttemptUpdate":
                engine.attempt_update()  # signals CHECKING before the reply is queued
                invocation.return_value(None)
            elif method == "GetStatus":
                invocation.return_value(GLib.Variant("(xdssx)", engine.status.as_tuple()))
            elif method == "ResetStatus":
                if engine.reset_status():
                    invocation.return_value(None)
                else:
                    invocation.return_dbus_error(
                        "org.freedesktop.DBus.Error.Failed",
                        f"Reset not allowed in state {engine.status.current_operation}",
                    )
            else:
                invocation.return_dbus_error("org.freedesktop.DBus.Error.UnknownMethod", method)
        except ScenarioError as exc:
            log.error("bad scenario: %s", exc)
            invocation.return_dbus_error("org.freedesktop.DBus.Error.Failed", f"fake update_engine: {exc}")

    def on_bus(conn: Any, _name: str) -> None:
        connection.append(conn)
        conn.register_object(OBJECT_PATH, interface_info, on_call, None, None)

    def on_name(_conn: Any, name: str) -> None:
        log.info("owning %s", name)

    def on_lost(_conn: Any, name: str) -> None:
        log.error("could not own (or lost) %s", name)
        exit_code[0] = 1
        loop.quit()

    engine.start()
    bus_type = Gio.BusType.SYSTEM if bus == "system" else Gio.BusType.SESSION
    owner = Gio.bus_own_name(bus_type, BUS_NAME, Gio.BusNameOwnerFlags.NONE, on_bus, on_name, on_lost)

    def stop() -> bool:
        log.info("stopping")
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    loop.run()
    Gio.bus_unown_name(owner)
    return exit_code[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: the paths are options only so the script can be tried on a session bus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bus", choices=("system", "session"), default="system")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)
    parser.add_argument("--marker", type=Path, default=MARKER)
    parser.add_argument("--scenario", type=Path, action="append", help="scenario file (repeatable, first found wins)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    scenario_files = tuple(args.scenario) if args.scenario else (args.state_dir / "scenario.json", SCENARIO_FILES[1])
    try:
        load_scenario(scenario_files)
    except ScenarioError as exc:
        log.error("bad scenario (AttemptUpdate will fail until fixed): %s", exc)
    return serve(
        args.bus,
        {"marker": args.marker, "state_dir": args.state_dir, "scenario_files": scenario_files},
    )


if __name__ == "__main__":
    sys.exit(main())
