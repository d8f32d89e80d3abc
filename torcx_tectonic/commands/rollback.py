"""``torcx-tectonic rollback``: put back the runtime version the node ran
before its last runtime change (docs/design.md, 'Rolling back').

What "before" was comes from the last change the install steps recorded
(state.RuntimeChange, kept across boots); whether it can still be put back,
from the disk (a store torcx reads, an image the GC kept). The backend
selects or links it again with the Docker reset rule of a forward change.
The rollback leaves a run record of its own, which the status shows, and
it holds the flow lock, so no flow runs meanwhile. Exit status: 0 when it
rolled back, 1 when there is nothing to roll back to (nothing is changed)
or it failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..backend import backend_for
from ..cluster.view import PIN_ANNOTATION
from ..config import Config
from ..errors import NothingToRollBack
from ..flows import ROLLBACK
from ..node import systemd
from ..paths import NodePaths
from ..state import FlowState, RolledBack, RuntimeChange, load_change, note_change
from ..steps import lock
from ..verdict import Facts
from .status import gather


def roll_back(config: Config, paths: NodePaths,
              units: Callable[[Sequence[str]], dict[str, str]] = systemd.unit_states,
              clock: Callable[[], float] = time.time) -> RolledBack:
    """Roll back, or NothingToRollBack having changed nothing."""
    backend = backend_for(config)
    with lock.held(paths.lock_file):
        change = load_change(paths)
        if change is None or change.runtime != backend.runtime:
            raise NothingToRollBack(f"no change of {backend.runtime} is recorded on this node "
                                    f"({paths.on_node(paths.runtime_change)}): nothing to roll back to")
        status = gather(config, paths, check_hashes=False, units=units)
        facts = Facts(runtime=backend.runtime, board=status.board, current_os=status.current_os,
                      next_os=status.next_os, kube_version=status.kube_version, wanted=status.wanted,
                      mapping_source=status.mapping_source)
        done = backend.roll_back(paths, facts, change)
        now = clock()
        note_change(paths, RuntimeChange(runtime=done.runtime, previous=done.previous, version=done.version,
                                         changed=now, by=ROLLBACK))
        state = FlowState(paths, ROLLBACK, clock)
        state.begin(ROLLBACK)
        state.save(done)
        state.step_succeeded(ROLLBACK, ends_run=True, note=summary(done, change))
    return done


def summary(done: RolledBack, change: RuntimeChange) -> str:
    """What the rollback did, in one line (the run record's note)."""
    reset = f"; {done.runtime}'s data is emptied before it starts ({done.reset})" if done.reset else \
        f"; {done.runtime}'s data stays (no reset pending)"
    return (f"rolled back {done.runtime} from {done.previous or 'none'} to {done.version} (the version before the "
            f"change of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(change.changed))} by {change.by}), "
            f"applied {done.activated}{reset}")


def render(done: RolledBack, node_name: str) -> str:
    """The command's output: what it did, and that the next run would undo it unless pinned."""
    return (f"torcx-tectonic rollback: {done.runtime} {done.previous or 'none'} → {done.version}, "
            f"applied {done.activated}\n"
            + "".join(f"  found:  {where}\n" for where in done.found)
            + (f"  reset:  /var/lib/docker is emptied before {done.runtime} {done.version} starts ({done.reset})\n"
               if done.reset else "  reset:  none pending\n")
            + f"\nThe next new-kubelet or new-OS run chooses {done.runtime} from the runtime mappings again and "
              f"would move this node forward. To hold it at {done.version}, pin it:\n"
              f"  kubectl annotate node {node_name} {PIN_ANNOTATION}={done.version}\n"
              f"or set [runtime] pin = {done.version} in /etc/torcx-tectonic/conf.d/.\n")
