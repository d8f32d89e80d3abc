"""osrelease: version and board, quoting, the COREOS_BOARD fallback, /etc over /usr/lib."""

from __future__ import annotations

from pathlib import Path

import pytest

from torcx_tectonic import osrelease
from torcx_tectonic.errors import InputError

COREOS = """\
NAME="Container Linux by CoreOS"
ID=coreos
VERSION=1632.3.0
VERSION_ID="1632.3.0"
BUILD_ID=2018-02-14-0338
PRETTY_NAME="Container Linux by CoreOS 1632.3.0 (Ladybug)"
COREOS_BOARD='amd64-usr'
"""


def test_quoted_values_are_read() -> None:
    assert osrelease.os_release_from_text(COREOS, "os-release") == osrelease.OSRelease("1632.3.0", "amd64-usr")


@pytest.mark.parametrize(
    ("machine", "board"), [("x86_64", "amd64-usr"), ("aarch64", "arm64-usr"), ("arm64", "arm64-usr")]
)
def test_missing_board_falls_back_by_machine(machine: str, board: str) -> None:
    text = "ID=coreos\nVERSION_ID=1235.0.0\n"
    assert osrelease.os_release_from_text(text, "os-release", machine=machine).board == board


def test_board_in_the_file_wins_over_the_machine() -> None:
    assert osrelease.os_release_from_text(COREOS, "os-release", machine="aarch64").board == "amd64-usr"


def test_unknown_machine_without_board_is_an_error() -> None:
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text("VERSION_ID=1235.0.0\n", "/usr/lib/os-release", machine="riscv64")
    message = str(caught.value)
    assert "/usr/lib/os-release: COREOS_BOARD is missing and machine 'riscv64' has no known board" in message
    assert "known: aarch64, arm64, x86_64" in message


@pytest.mark.parametrize(
    "text", ["ID=coreos\n", "VERSION_ID=\n", 'VERSION_ID=""\n'], ids=["absent", "empty", "empty-quoted"]
)
def test_missing_version_id_is_an_error(text: str) -> None:
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text(text, "/etc/os-release", machine="x86_64")
    assert "/etc/os-release: VERSION_ID is missing; expected e.g. VERSION_ID=1632.3.0" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../1632.3.0", "is not a version like 1632.3.0"),
        ("1632.3", "is not of the form MAJOR.MINOR.PATCH"),
        ("1632.3.0.1", "is not of the form MAJOR.MINOR.PATCH"),
        ("1632.3.0-rc1", "is not of the form MAJOR.MINOR.PATCH"),
        ("1632.3.0+local", "is not of the form MAJOR.MINOR.PATCH"),
        ("1632/3/0", "is not a version like 1632.3.0"),
        ("stable", "is not a version like 1632.3.0"),
    ],
)
def test_bad_version_id_is_an_error(value: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text(f"VERSION_ID={value}\nCOREOS_BOARD=amd64-usr\n", "/etc/os-release")
    assert f"/etc/os-release: VERSION_ID: OS version {value!r} {expected}" in str(caught.value)


def test_etc_takes_precedence_over_usr_lib(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    etc.write_text("VERSION_ID=1688.5.3\nCOREOS_BOARD=amd64-usr\n")
    usr.write_text("VERSION_ID=1632.3.0\nCOREOS_BOARD=amd64-usr\n")
    assert osrelease.read_os_release((etc, usr)).version == "1688.5.3"


def test_usr_lib_is_read_when_etc_is_missing(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    usr.write_text("VERSION_ID=1632.3.0\nCOREOS_BOARD=arm64-usr\n")
    assert osrelease.read_os_release((etc, usr)) == osrelease.OSRelease("1632.3.0", "arm64-usr")


def test_dangling_etc_symlink_falls_through(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    etc.symlink_to(tmp_path / "nowhere")
    usr.write_text("VERSION_ID=1632.3.0\nCOREOS_BOARD=amd64-usr\n")
    assert osrelease.read_os_release((etc, usr)).version == "1632.3.0"


def test_no_os_release_names_every_candidate(tmp_path: Path) -> None:
    candidates = (tmp_path / "a", tmp_path / "b")
    with pytest.raises(InputError) as caught:
        osrelease.read_os_release(candidates)
    assert f"no os-release file found; looked at {candidates[0]}, {candidates[1]}" in str(caught.value)


def test_malformed_etc_file_is_an_error_not_skipped(tmp_path: Path) -> None:
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    etc.write_text("VERSION_ID=1688.5.3\nthis is not os-release\n")
    usr.write_text("VERSION_ID=1632.3.0\nCOREOS_BOARD=amd64-usr\n")
    with pytest.raises(InputError, match=f"{etc}:2: expected KEY=value"):
        osrelease.read_os_release((etc, usr))


@pytest.mark.parametrize(("a", "b"), [("1632.3.0", "1688.5.3"), ("1520.2.9", "1520.3.0"), ("999.9.9", "1000.0.0")])
def test_parse_os_version_orders_numerically(a: str, b: str) -> None:
    assert osrelease.parse_os_version(a, "x") < osrelease.parse_os_version(b, "x")
