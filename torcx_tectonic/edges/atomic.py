"""Atomic file writing shared by every writer.

A file appears complete or not at all: the data goes to a temporary file in
the same directory, is fsynced, renamed over the target, and the directory is
fsynced so the rename survives a crash. Directories created on the way are
made durable the same way (their parent is fsynced), so a power cut cannot
take a new versioned store, and the addon renamed into it, with it.

A temporary name carries the writer's process id
(``.<name>.<pid>.<random>.tmp``): a writer that is killed cannot remove its
temporary file, so whoever runs next removes the temporaries of writers that
no longer exist (``remove_stale``), and never one that is being written.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

#: A temporary file of a writer: ``.<name>.<pid>.<random>.tmp``, or ``.<name>.<pid>.link`` (``placed``).
TEMPORARY = re.compile(r"\..+\.(?P<pid>[0-9]{1,10})(?:\.[A-Za-z0-9_]{1,16}\.tmp|\.link)", re.ASCII)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path, mode: int = 0o777) -> None:
    """``mkdir -p``, durably: each directory created is synced into its parent."""
    if directory.is_dir():
        return
    make_dirs(directory.parent, mode)
    try:
        directory.mkdir(mode)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return
    fsync_dir(directory.parent)


def temporary_prefix(path: Path) -> str:
    """The start of the temporary names of writers of ``path`` in this process."""
    return f".{path.name}.{os.getpid()}."


def _named(err: OSError, path: Path) -> OSError:
    """The error with the file it is about, when it names none (ENOSPC does not)."""
    if err.filename is not None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno or 0), str(path))


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only when the block ends
    without an exception; on any error the temporary file is removed and
    ``path`` is untouched. An OSError names ``path`` (a full disk says which
    file it refused)."""
    try:
        make_dirs(path.parent)
        fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _named(err, path) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _named(err, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def placed(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` for the block to create a link
    at (a hard link or a symlink); it is renamed over ``path`` when the block
    ends, so readers see the old file or the new one, and removed on any
    error. The name carries the pid, as ``remove_stale`` expects."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def remove_stale(directory: Path) -> list[str]:
    """Remove the temporary files in ``directory`` whose writer is gone
    (killed, or the node lost power); returns their names. A temporary file
    of a live writer is left alone, whoever it is."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = TEMPORARY.fullmatch(entry.name)
        if match is None or entry.is_dir(follow_symlinks=False) or _alive(int(match["pid"])):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed.append(entry.name)
    if removed:
        fsync_dir(directory)
    return sorted(removed)
