"""The torcx user store: versioned stores, addon installation and GC.

Addons enter a store complete and hash-checked or not at all: the bytes are
streamed into a temporary file beside the target, hashed on the way, and
renamed into place only when the sha512 matches.

An addon is tens of MiB and its sha512 costs more than receiving and
writing it, so the hashing runs in a thread of its own while the bytes keep
arriving and being written (hashlib and the file and socket calls release
the interpreter lock): one pass over the bytes, on two cores.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import shutil
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from ..edges.atomic import atomic_writer, fsync_dir, make_dirs, placed
from ..edges.inputfile import OS_VERSION
from ..errors import VerificationError
from ..node.osrelease import parse_os_version
from .manifest import check_name, file_digest, read_chunks

ADDON_SUFFIX = ".torcx.tgz"
TRASH_PREFIX = ".gc-"
#: Chunks received but not hashed yet, at most (a few MiB: the memory an intake may hold).
HASH_QUEUE_CHUNKS = 4
#: How much is written before its write-back to the disk is started (see write_hashing).
WRITEBACK_BYTES = 16 << 20


def addon_filename(name: str, reference: str) -> str:
    """``<name>:<reference>.torcx.tgz``, refusing names that escape the store."""
    check_name(name, "addon name", "addon")
    check_name(reference, "addon reference", "addon")
    return f"{name}:{reference}{ADDON_SUFFIX}"


def versioned_store(user_store: Path, os_version: str) -> Path:
    """The store torcx reads only when booting ``os_version``."""
    parse_os_version(os_version, "versioned store")
    return user_store / os_version


def has_addon(store: Path, name: str, reference: str, sha512: str) -> bool:
    """Whether the store already holds this exact addon (so it is not fetched again)."""
    path = store / addon_filename(name, reference)
    return path.is_file() and file_digest(path) == sha512


def install_addon(store: Path, name: str, reference: str, sha512: str, chunks: Iterable[bytes], origin: str) -> Path:
    """Stream an addon into ``store``, verifying its sha512 before it appears."""
    target = store / addon_filename(name, reference)
    with atomic_writer(target, 0o644) as handle:
        actual = write_hashing(handle, chunks)
        if actual != sha512:
            raise VerificationError(
                f"{origin}: sha512 mismatch for {target.name}: the manifest expects {sha512[:16]}…, "
                f"the download has {actual[:16]}…; nothing was stored"
            )
    return target


def write_hashing(handle: BinaryIO, chunks: Iterable[bytes], algorithm: str = "sha512") -> str:
    """Write ``chunks`` to ``handle`` as they come, hashing them in another
    thread meanwhile; the sha512 (or ``algorithm``'s digest, in hex) of all of them. The disk write-back
    of what was written is started every WRITEBACK_BYTES (an advice to drop
    the pages, which starts writing dirty ones back and keeps them), so the
    fsync that makes the file durable before it is renamed into the store
    waits for the last few MiB only, not for the whole addon."""
    digest = hashlib.new(algorithm)
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=HASH_QUEUE_CHUNKS)
    failed: list[BaseException] = []

    def hash_all() -> None:
        while (chunk := pending.get()) is not None:
            if not failed:  # after a failure, only drain: the writer must never block on a full queue
                try:
                    digest.update(chunk)
                except BaseException as err:
                    failed.append(err)

    worker = threading.Thread(target=hash_all, name="sha512", daemon=True)
    worker.start()
    written = started = 0
    try:
        for chunk in chunks:
            handle.write(chunk)
            pending.put(chunk)
            written += len(chunk)
            if written - started >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
                handle.flush()
                os.posix_fadvise(handle.fileno(), started, written - started, os.POSIX_FADV_DONTNEED)
                started = written
    finally:
        pending.put(None)
        worker.join()
    if failed:
        raise failed[0]
    return digest.hexdigest()


def list_addons(store: Path) -> list[tuple[str, str]]:
    """(name, reference) of every addon in a store."""
    found = []
    if store.is_dir():
        for entry in sorted(store.iterdir()):
            if entry.is_file() and entry.name.endswith(ADDON_SUFFIX) and ":" in entry.name:
                name, _, reference = entry.name[: -len(ADDON_SUFFIX)].partition(":")
                found.append((name, reference))
    return found


def select_gc(entries: Sequence[str], current_os: str) -> list[str]:
    """Versioned store names older than the running OS: the only things GC
    removes. Anything that is not an OS version exactly as torcx names a
    store (not v1520.3.0, 1520.03.0, ...) is left alone."""
    current = parse_os_version(current_os, "current OS")
    return sorted(name for name in entries if OS_VERSION.matches(name) and parse_os_version(name, "store") < current)


def gc_versioned_stores(user_store: Path, current_os: str) -> list[str]:
    """Remove versioned stores older than the running OS; return their names.

    Each store is first renamed to a hidden name (atomic, ignored by torcx),
    then deleted, so a kill never leaves a half-deleted versioned store.
    """
    if not user_store.is_dir():
        return []
    # What an interrupted GC left behind goes first, so no rename below collides with it.
    remove_trash(user_store)
    names = [p.name for p in user_store.iterdir() if p.is_dir() and not p.is_symlink()]
    removed = select_gc(names, current_os)
    for name in removed:
        os.rename(user_store / name, user_store / f"{TRASH_PREFIX}{name}")
    if removed:
        fsync_dir(user_store)
    for name in removed:
        _remove_tree(user_store / f"{TRASH_PREFIX}{name}")
    return removed


def remove_trash(user_store: Path) -> list[Path]:
    """Delete the stores an interrupted GC had moved aside (hidden names
    torcx never reads); returns them."""
    try:
        entries = sorted(user_store.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for trash in entries:
        if trash.name.startswith(TRASH_PREFIX) and trash.is_dir() and not trash.is_symlink():
            _remove_tree(trash)
            removed.append(trash)
    return removed


def _remove_tree(path: Path) -> None:
    """``rm -r``, untroubled by entries that are already gone (another
    clean-up removing the same trash)."""

    def gone_already(function: object, name: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=gone_already)


def link_addon(store: Path, name: str, reference: str, sha512: str, source: Path) -> str:
    """Put an addon this run already verified into another store: a hard
    link, atomically (link to a temporary name, then rename), or a copy that
    is verified again when the stores are on different filesystems. Returns
    which of the two it did."""
    target = store / addon_filename(name, reference)
    make_dirs(store)
    try:
        with placed(target) as tmp:
            os.link(source, tmp)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        with source.open("rb") as handle:
            install_addon(store, name, reference, sha512, read_chunks(handle), str(source))
        return "copied"
    return "linked"
