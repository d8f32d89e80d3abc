"""Backoff: a flow whose runs keep failing waits longer and longer before it tries again.

The new-OS flow is started by a path unit while update_engine's marker
exists, that is for as long as the update waits for its reboot. Its target
used to require the steps, so a failed run failed the target, and the path
unit, seeing it stop with the marker still there, started the run again at
once: with a bucket that lacks the next OS's addon every node of a fleet
asked it again and again. Now the target of a flow that backs off
(``Flow.backoff``) only wants its steps: a failed run leaves it reached, and
the path unit is quiet. The step that ends a failed run computes the next
try, records it on the run record and writes the flow's backoff file; its
unit's ``OnFailure=`` starts the flow's retry unit, which waits until that
time and starts the target again (starting a reached target starts the
steps it wants that are not running). A run that begins, the retry unit's
or one an operator starts (``systemctl start torcx-new-os.target``, or
``torcx-tectonic retry new-os``), removes the file, so a waiting retry unit
then starts nothing.

The pause doubles with each run that fails in a row, from ``[units]
backoff_delay`` up to ``backoff_max_delay``, and each is a random 50 to 100 %
of that ("equal jitter"): never shorter than half, so a node's runs per hour
stay bounded, and nodes that failed together spread over the other half.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from .. import config as configuration
from .. import log as logsetup
from ..config import UnitSettings
from ..edges.atomic import write_atomic
from ..errors import ConfigError, TorcxTectonicError
from ..flows import Flow, all_flows
from ..node import systemd
from ..paths import NodePaths, backoff_file
from ..state import FAILED, FlowState, load_run

log = logging.getLogger("torcx-tectonic")

#: The longest sleep of the retry unit between two looks at the run record
#: (a new failure moves the next try; an operator's retry removes the file).
LOOK_SECS = 60.0
#: Doubling stops here: the cap is reached long before (2**30 times the delay).
MAX_DOUBLINGS = 30


def pause(failed_in_a_row: int, units: UnitSettings, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failed_in_a_row`` runs failed in a row."""
    doublings = min(max(failed_in_a_row - 1, 0), MAX_DOUBLINGS)
    full = min(units.backoff_delay * 2.0 ** doublings, units.backoff_max_delay)
    return full * (0.5 + 0.5 * rand())


def hold_path(paths: NodePaths, flow: str) -> Path:
    return Path(backoff_file(flow, paths.state_dir))


def hold(state: FlowState, units: UnitSettings, rand: Callable[[], float] = random.random) -> float | None:
    """After this boot's run of the flow failed: its next try, on the run
    record and in the backoff file; None when the run did not fail."""
    run = load_run(state.paths, state.flow)
    if run is None or run.result != FAILED or not state.this_boot(run):
        return None
    when = (run.finished or state.clock()) + pause(run.failed_in_a_row, units, rand)
    state.tries_again_at(when)
    write_atomic(hold_path(state.paths, state.flow),
                 f"{state.flow} backs off after {run.failed_in_a_row} failed run(s) in a row until {when:.0f} "
                 f"({_clock(when)})\n")
    log.warning("%s: %d run(s) failed in a row: the next try is at %s (in %.0fs); `torcx-tectonic retry %s` "
                "tries now", state.flow, run.failed_in_a_row, _clock(when), when - state.clock(), state.flow)
    return when


def release(paths: NodePaths, flow: str) -> None:
    """A run begins: the backoff of the one before it is over."""
    hold_path(paths, flow).unlink(missing_ok=True)


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def start_unit(flow: Flow) -> str:
    """What starts a run of the flow: what its trigger starts, else its target."""
    return flow.trigger.unit if flow.trigger is not None else flow.target_unit


def wait_and_retry(flow: Flow, paths: NodePaths, *, clock: Callable[[], float] = time.time,
                   sleep: Callable[[float], None] = time.sleep,
                   start: Callable[[str], None] = systemd.start) -> bool:
    """The retry unit: wait until the next try the run record names, then
    start the flow (the run that begins removes the backoff file); whether
    it started it, not when the file is gone meanwhile: a run began, an
    operator's, which writes a new next try if it fails."""
    held = hold_path(paths, flow.name)
    told = None
    while held.exists():
        run = load_run(paths, flow.name)
        due = run.next_try if run is not None and run.next_try is not None else clock()
        if due <= clock():  # the run that begins removes the file (it stays if starting fails)
            log.info("%s: starting the flow again (its next try was at %s)", flow.name, _clock(due))
            start(start_unit(flow))
            return True
        if due != told:
            log.info("%s: waiting until %s (in %.0fs) to try again", flow.name, _clock(due), due - clock())
            told = due
        sleep(min(due - clock(), LOOK_SECS))
    log.info("%s: no longer backing off (%s is gone): nothing to start", flow.name, held)
    return False


def retry_now(flow: Flow, paths: NodePaths, *, stop: Callable[[str], None] = systemd.stop,
              start: Callable[[str], None] = systemd.start) -> bool:
    """An operator's retry: stop the retry unit's wait, end the backoff and
    start the flow at once (without waiting for it, unlike ``systemctl
    start``); whether it was backing off."""
    stop(flow.retry_unit)
    backing_off = hold_path(paths, flow.name).exists()
    release(paths, flow.name)
    start(start_unit(flow))
    return backing_off


def main(argv: Sequence[str] | None = None, paths: NodePaths | None = None) -> NoReturn:
    """``retry-flow --flow FLOW``, the retry unit's program."""
    logsetup.setup()
    parser = argparse.ArgumentParser(prog="retry-flow", description="wait until a flow's next try, then start it")
    parser.add_argument("--flow", required=True, help="a flow that backs off after failed runs")
    name = parser.parse_args(argv).flow
    try:
        config = configuration.load()
    except ConfigError as err:  # the steps report it; the flow is still tried again
        log.warning("retrying %s with the default configuration: %s", name, err)
        config = configuration.build({})
    flow = next((f for f in all_flows(config) if f.name == name and f.backoff), None)
    if flow is None:
        sys.stderr.write(f"retry-flow: no flow {name!r} that backs off\n")
        sys.exit(2)
    try:
        wait_and_retry(flow, paths or NodePaths())
    except (OSError, TorcxTectonicError) as err:
        log.error("%s: cannot start the flow again: %s", name, err)
        sys.exit(1)
    sys.exit(0)
