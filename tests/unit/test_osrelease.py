"""osrelease: version and board, quoting, the COREOS_BOARD fallback, /usr/lib/os-release only."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from torcx_tectonic.errors import InputError
from torcx_tectonic.node import osrelease

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
    assert ("/usr/lib/os-release: COREOS_BOARD and FLATCAR_BOARD are missing and machine 'riscv64' has no known "
            "board") in message
    assert "known: aarch64, arm64, x86_64" in message


@pytest.mark.parametrize(
    "text", ["ID=coreos\n", "VERSION_ID=\n", 'VERSION_ID=""\n'], ids=["absent", "empty", "empty-quoted"]
)
def test_missing_version_id_is_an_error(text: str) -> None:
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text(text, "/etc/os-release", machine="x86_64")
    assert "/etc/os-release: VERSION_ID is missing; expected e.g. VERSION_ID=1632.3.0" in str(caught.value)


@pytest.mark.parametrize(
    "value",
    ["../1632.3.0", "1632.3", "1632.3.0.1", "1632.3.0-rc1", "1632.3.0+local", "1632/3/0", "stable", "v1632.3.0",
     "1632.03.0", "01632.3.0", "1632.3.0 ", " 1632.3.0", "1632.\u0663.0", "1632.3.0\t"],
)
def test_bad_version_id_is_an_error(value: str) -> None:
    """One rule everywhere: VERSION_ID exactly as torcx names a versioned store."""
    quoted = value.replace("\\", "\\\\").replace('"', '\\"')
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text(f'VERSION_ID="{quoted}"\nCOREOS_BOARD=amd64-usr\n', "/usr/lib/os-release")
    assert f"/usr/lib/os-release: VERSION_ID: OS version {value!r} is not allowed; expected MAJOR.MINOR.PATCH" in str(
        caught.value)


@pytest.mark.parametrize("board", ["../../x", "amd64-usr/..", "AMD64", "", "-x", "a b"])
def test_bad_board_is_an_error(board: str) -> None:
    with pytest.raises(InputError) as caught:
        osrelease.os_release_from_text(f"VERSION_ID=1632.3.0\nCOREOS_BOARD='{board}'\n", "/usr/lib/os-release",
                                       machine="riscv64")
    message = str(caught.value)
    assert message.startswith("/usr/lib/os-release: ")
    assert "COREOS_BOARD" in message


def test_only_usr_lib_os_release_is_read_by_default() -> None:
    """torcx keys versioned stores by /usr/lib/os-release alone: an
    /etc/os-release override must not move the addons."""
    default = inspect.signature(osrelease.read_os_release).parameters["path"].default
    assert default == osrelease.OS_RELEASE_PATH == Path("/usr/lib/os-release")


def test_read_os_release(tmp_path: Path) -> None:
    usr = tmp_path / "os-release"
    usr.write_text("VERSION_ID=1632.3.0\nCOREOS_BOARD=arm64-usr\n")
    assert osrelease.read_os_release(usr) == osrelease.OSRelease("1632.3.0", "arm64-usr")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "missing; expected an os-release file with VERSION_ID"),
        (lambda p: p.mkdir(), "is a directory; expected an os-release file"),
        (lambda p: p.write_bytes(b"VERSION_ID=1632.3.0\xff\n"), "not UTF-8 text (byte 0xff at offset 19)"),
        (lambda p: p.write_text("VERSION_ID=1688.5.3\nthis is not os-release\n"), ":2: expected KEY=value"),
    ],
    ids=["missing", "directory", "not-utf8", "malformed"],
)
def test_unreadable_os_release_is_an_input_error(tmp_path: Path, make: Callable[[Path], object], expected: str) -> None:
    path = tmp_path / "os-release"
    make(path)
    with pytest.raises(InputError) as caught:
        osrelease.read_os_release(path)
    assert str(caught.value).startswith(str(path))
    assert expected in str(caught.value)


@pytest.mark.parametrize(("a", "b"), [("1632.3.0", "1688.5.3"), ("1520.2.9", "1520.3.0"), ("999.9.9", "1000.0.0")])
def test_parse_os_version_orders_numerically(a: str, b: str) -> None:
    assert osrelease.parse_os_version(a, "x") < osrelease.parse_os_version(b, "x")


def test_flatcar_names_its_board_flatcar_board() -> None:
    text = 'ID=flatcar\nVERSION_ID=3760.2.0\nFLATCAR_BOARD="arm64-usr"\n'
    assert osrelease.os_release_from_text(text, "/usr/lib/os-release", machine="x86_64").board == "arm64-usr"
