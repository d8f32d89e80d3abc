"""The running OS: version and board from os-release.

``/etc/os-release`` takes precedence over ``/usr/lib/os-release`` (the
os-release(5) rule); old Container Linux releases lack ``COREOS_BOARD`` so the
board falls back to the machine architecture.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .envfile import parse_env
from .errors import InputError
from .paths import OS_RELEASE_PATHS

#: Container Linux board per machine architecture, for releases without COREOS_BOARD.
BOARD_BY_MACHINE = {"x86_64": "amd64-usr", "aarch64": "arm64-usr", "arm64": "arm64-usr"}


@dataclass(frozen=True)
class OSRelease:
    """What the tool needs to know about an OS release."""

    version: str
    board: str


def parse_os_version(value: str, origin: str) -> Version:
    """A Container Linux version (``1632.3.0``) as a comparable Version."""
    try:
        version = Version(value)
    except InvalidVersion:
        raise InputError(f"{origin}: OS version {value!r} is not a version like 1632.3.0") from None
    if version.local or version.pre or version.post or version.dev or len(version.release) != 3:
        raise InputError(f"{origin}: OS version {value!r} is not of the form MAJOR.MINOR.PATCH")
    return version


def os_release_from_text(text: str, origin: str, machine: str | None = None) -> OSRelease:
    """Turn os-release text into an OSRelease, validating the version."""
    values = parse_env(text, origin)
    version = values.get("VERSION_ID")
    if not version:
        raise InputError(f"{origin}: VERSION_ID is missing; expected e.g. VERSION_ID=1632.3.0")
    parse_os_version(version, f"{origin}: VERSION_ID")
    board = values.get("COREOS_BOARD")
    if not board:
        arch = machine or platform.machine()
        board = BOARD_BY_MACHINE.get(arch, "")
        if not board:
            raise InputError(
                f"{origin}: COREOS_BOARD is missing and machine {arch!r} has no known board",
                hint=f"known: {', '.join(sorted(BOARD_BY_MACHINE))}",
            )
    return OSRelease(version=version, board=board)


def read_os_release(candidates: Sequence[Path] = OS_RELEASE_PATHS) -> OSRelease:
    """Read the first os-release file that exists."""
    for path in candidates:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        return os_release_from_text(text, str(path))
    raise InputError(f"no os-release file found; looked at {', '.join(map(str, candidates))}")
