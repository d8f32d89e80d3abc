"""The torcx user store: versioned stores, addon installation and GC.

Addons enter a store complete and hash-checked or not at all: the bytes are
streamed into a temporary file beside the target, hashed on the way, and
renamed into place only when the sha512 matches.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from packaging.version import Version

from .atomic import atomic_writer, fsync_dir, make_dirs
from .errors import VerificationError
from .inputfile import OS_VERSION
from .manifest import check_name, file_sha512, read_chunks, sha512_of_stream
from .osrelease import parse_os_version

ADDON_SUFFIX = ".torcx.tgz"
TRASH_PREFIX = ".gc-"


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
    return path.is_file() and file_sha512(path) == sha512


def install_addon(store: Path, name: str, reference: str, sha512: str, chunks: Iterable[bytes], origin: str) -> Path:
    """Stream an addon into ``store``, verifying its sha512 before it appears."""
    target = store / addon_filename(name, reference)
    with atomic_writer(target, 0o644) as handle:
        def written() -> Iterable[bytes]:
            for chunk in chunks:
                handle.write(chunk)
                yield chunk

        actual = sha512_of_stream(written())
        if actual != sha512:
            raise VerificationError(
                f"{origin}: sha512 mismatch for {target.name}: the manifest expects {sha512[:16]}…, "
                f"the download has {actual[:16]}…; nothing was stored"
            )
    return target


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
    return sorted(name for name in entries if OS_VERSION.matches(name) and Version(name) < current)


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
    tmp = store / f".{target.name}.{os.getpid()}.link"
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        with source.open("rb") as handle:
            install_addon(store, name, reference, sha512, read_chunks(handle), str(source))
        return "copied"
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(store)
    return "linked"
