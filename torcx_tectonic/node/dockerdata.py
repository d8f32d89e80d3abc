"""Docker's data across a Docker version change: the marker and the reset.

Docker cannot open a data directory written by a newer version, so when the
selected Docker changes, a marker records the change and the shipped
``torcx-tectonic-docker-reset.service`` (ordered before docker.service and
conditioned on the marker) empties /var/lib/docker before the new Docker
starts, at the next boot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..edges.atomic import fsync_dir, write_atomic
from ..edges.inputfile import parse_json, read_text_if_exists
from ..errors import InputError, shown

log = logging.getLogger(__name__)

OLD_SUFFIX = ".torcx-tectonic-old"
MARKER_FORMAT = 'a JSON object {"from": ..., "to": ...}'


def arrange(marker: Path, previous: str | None, new: str) -> bool:
    """Record that Docker changes from ``previous`` to ``new``; returns
    whether the marker changed."""
    document = {"from": previous, "to": new}
    text = read_text_if_exists(marker, MARKER_FORMAT)
    try:
        if text is not None and parse_json(text, str(marker), MARKER_FORMAT) == document:
            return False
    except InputError:
        pass  # a corrupt marker is replaced
    write_atomic(marker, json.dumps(document) + "\n")
    return True


def pending(marker: Path) -> tuple[str | None, str] | None:
    """The change a marker records, (from, to); None without a marker or
    with one that is not well-formed (``arrange`` replaces it)."""
    text = read_text_if_exists(marker, MARKER_FORMAT)
    if text is None:
        return None
    try:
        document = parse_json(text, str(marker), MARKER_FORMAT)
    except InputError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("to"), str) or \
            not isinstance(document.get("from"), (str, type(None))):
        return None
    return document["from"], document["to"]


def cancel(marker: Path) -> bool:
    """Forget a pending reset: the selected Docker is again the one that
    booted (e.g. a kubelet upgrade was rolled back before the reboot)."""
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(marker.parent)
    return True


def reset(marker: Path, data_dir: Path, booted_reference: str | None) -> list[str]:
    """Empty ``data_dir`` if the Docker that booted is the one the marker
    expects; return what was removed.

    The directory is renamed away first (one atomic step), then deleted, so a
    kill leaves either the old data or none, never a half-emptied tree that
    Docker would try to open.
    """
    text = read_text_if_exists(marker, MARKER_FORMAT)
    if text is None:
        return []
    expected = parse_json(text, str(marker), MARKER_FORMAT)
    if not isinstance(expected, dict):
        raise InputError(f"{marker}: is {shown(expected)}; expected {MARKER_FORMAT}")
    if booted_reference is not None and booted_reference != expected.get("to"):
        log.warning("Docker %s booted, not %s: leaving %s alone until it does", booted_reference, expected.get("to"),
                    data_dir)
        return []
    # What an interrupted reset moved aside goes first: the data directory
    # found now may be newer (a Docker started meanwhile) and is moved aside
    # whole below, which a leftover of the same name would refuse.
    old = moved_aside(data_dir)
    removed: set[str] = set()
    if old.is_dir() and not old.is_symlink():
        removed.update(p.name for p in old.iterdir())
        remove_moved_aside(data_dir)
        log.info("removed %s, left by an interrupted reset", old)
    if data_dir.exists():
        os.rename(data_dir, old)
        fsync_dir(data_dir.parent)
        removed.update(p.name for p in old.iterdir())
        shutil.rmtree(old)
    if not data_dir.is_dir():
        data_dir.mkdir(mode=0o711)
        fsync_dir(data_dir.parent)
    marker.unlink()
    fsync_dir(marker.parent)
    return sorted(removed)


def moved_aside(data_dir: Path) -> Path:
    """Where a reset moves the data directory before deleting it."""
    return data_dir.with_name(data_dir.name + OLD_SUFFIX)


def remove_moved_aside(data_dir: Path) -> list[Path]:
    """Delete the data an interrupted reset had moved aside (Docker never
    reads it there); returns what was removed."""
    old = moved_aside(data_dir)
    if old.is_symlink() or not old.is_dir():
        return []
    shutil.rmtree(old)
    return [old]
