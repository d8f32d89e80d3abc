"""Atomic file writing shared by every writer.

A file appears complete or not at all: the data goes to a temporary file in
the same directory, is fsynced, renamed over the target, and the directory is
fsynced so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block ends
    without an exception; on any error the temporary file is removed and
    ``path`` is untouched."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_writer(path, mode) as handle:
        handle.write(payload)


def write_if_changed(path: Path, data: bytes | str, mode: int = 0o644) -> bool:
    """Write ``data`` unless ``path`` already holds exactly it.

    Returns whether the file was written, so callers can report it and steps
    stay idempotent (a second run rewrites nothing).
    """
    payload = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == payload and (path.stat().st_mode & 0o7777) == mode:
            return False
    except FileNotFoundError:
        pass
    write_atomic(path, payload, mode)
    return True
