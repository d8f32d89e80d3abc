"""What a step that did not end leaves behind, and how it is removed.

A step that is killed (SIGKILL, the OOM killer, its stop timeout) or loses
power cannot clean up after itself: its temporary files stay (hidden names
that torcx, the kubelet and Docker never read, but litter in their
directories), a GC it interrupted leaves versioned stores moved aside, a
Docker reset leaves the old data moved aside, and its run record still says
it runs. Every step's unit runs ``step-stopped`` after it (``ExecStopPost=``);
when the step did not succeed, that removes all of this and records how the
step ended. Every step also sweeps temporary files at its start (what a
power cut left). Only temporary files of writers that no longer exist are
removed, so a clean-up never races a writer, whichever flow it belongs to.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

from ..backend import backend_for
from ..config import Config
from ..edges.atomic import remove_stale
from ..flows import written_directories
from ..node import dockerdata
from ..paths import NodePaths

log = logging.getLogger(__name__)


def _subdirectories(directory: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(directory) if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _tree(top: Path, depth: int) -> list[Path]:
    """``top`` and its directories ``depth`` levels down."""
    return [top, *(found for sub in (_subdirectories(top) if depth else []) for found in _tree(sub, depth - 1))]


def write_directories(config: Config, paths: NodePaths) -> list[Path]:
    """Every directory torcx-tectonic writes files into (atomically, through
    temporary files beside them): what the flow table says the steps write."""
    found = [d for path, depth in written_directories(config).items() for d in _tree(paths.at(path), depth)]
    return list(dict.fromkeys(found))


def sweep(config: Config, paths: NodePaths) -> list[Path]:
    """Remove the temporary files of writers that are gone; returns them.
    A directory this step may not write (its sandbox) is left for a step
    that may."""
    removed = []
    for directory in write_directories(config, paths):
        try:
            removed += [directory / name for name in remove_stale(directory)]
        except OSError as err:  # read-only for this step, or gone meanwhile
            log.debug("not sweeping %s: %s", directory, err)
    return removed


def leftovers(config: Config, paths: NodePaths) -> list[Path]:
    """Remove everything an interrupted step leaves: temporary files, the
    stores an interrupted GC moved aside, the data an interrupted Docker reset
    moved aside. Returns what was removed."""
    removed = sweep(config, paths)
    for what, remove in (("step", partial(backend_for(config).leftovers, paths)),
                         ("Docker reset", partial(dockerdata.remove_moved_aside, paths.docker_data))):
        try:
            removed += remove()
        except OSError as err:  # read-only for this step
            log.debug("not removing what an interrupted %s left: %s", what, err)
    return removed
