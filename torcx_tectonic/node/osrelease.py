"""The running OS: version and board from os-release.

Only ``/usr/lib/os-release`` is read: torcx keys its versioned stores by the
``VERSION_ID`` of that file alone, so an ``/etc/os-release`` override must
not move addons into a store torcx never reads. Old Container Linux releases
lack ``COREOS_BOARD``, so the board falls back to the machine architecture.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from ..edges.envfile import parse_env
from ..edges.inputfile import BOARD, OS_VERSION, read_text
from ..errors import InputError
from ..paths import OS_RELEASE

__all__ = ["BOARD_BY_MACHINE", "OS_RELEASE_PATH", "OSRelease", "os_release_from_text", "parse_os_version",
           "read_os_release"]

#: Where the board is named: Container Linux writes COREOS_BOARD, Flatcar FLATCAR_BOARD.
BOARD_KEYS = ("COREOS_BOARD", "FLATCAR_BOARD")
#: Container Linux board per machine architecture, for releases without either.
BOARD_BY_MACHINE = {"x86_64": "amd64-usr", "aarch64": "arm64-usr", "arm64": "arm64-usr"}
#: The os-release torcx reads.
OS_RELEASE_PATH = Path(OS_RELEASE)



@dataclass(frozen=True)
class OSRelease:
    """What the tool needs to know about an OS release."""

    version: str
    board: str


def parse_os_version(value: object, origin: str) -> Version:
    """A Container Linux version (``1632.3.0``) as a comparable Version;
    the one check every place that takes an OS version makes."""
    return Version(OS_VERSION.check(value, "OS version", origin))


def os_release_from_text(text: str, origin: str, machine: str | None = None) -> OSRelease:
    """Turn os-release text into an OSRelease, validating the version and board."""
    values = parse_env(text, origin)
    version = values.get("VERSION_ID")
    if not version:
        raise InputError(f"{origin}: VERSION_ID is missing; expected e.g. VERSION_ID=1632.3.0")
    parse_os_version(version, f"{origin}: VERSION_ID")
    key = next((k for k in BOARD_KEYS if values.get(k)), BOARD_KEYS[0])
    board = values.get(key)
    if not board:
        arch = machine or platform.machine()
        board = BOARD_BY_MACHINE.get(arch, "")
        if not board:
            raise InputError(
                f"{origin}: {' and '.join(BOARD_KEYS)} are missing and machine {arch!r} has no known board",
                hint=f"known: {', '.join(sorted(BOARD_BY_MACHINE))}",
            )
    BOARD.check(board, key, origin)
    return OSRelease(version=version, board=board)


def read_os_release(path: Path = OS_RELEASE_PATH) -> OSRelease:
    """The OS this node runs, as torcx sees it."""
    return os_release_from_text(read_text(path, "an os-release file with VERSION_ID"), str(path))
