"""`make sysext`'s decisions that need no build: names, layout checks, placeholders."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysext import build
from torcx_tectonic import installdirs


def test_the_image_is_named_and_labelled_for_systemd_sysext() -> None:
    assert build.systemd_arch("x86_64") == "x86-64" and build.systemd_arch("aarch64") == "arm64"
    with pytest.raises(build.BuildError, match="'riscv64'"):
        build.systemd_arch("riscv64")
    assert build.image_name("0.1.0", "x86-64") == "torcx-tectonic-0.1.0-x86-64.raw"
    assert build.extension_release("arm64") == "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n"


def test_every_entry_point_of_the_repository_becomes_a_command() -> None:
    commands = build.commands()
    repo = build.REPO
    assert set(commands) == {"torcx-tectonic-generator", "torcx-tectonic",
                             *(p.name for p in (repo / "libexec").iterdir())}
    assert commands["torcx-tectonic"] == repo / "bin/torcx-tectonic"


def test_two_entry_points_with_one_name_are_refused(tmp_path: Path) -> None:
    for path in ("generator/torcx-tectonic-generator", "libexec/status", "bin/status"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("#!/usr/bin/python3\n")
    with pytest.raises(build.BuildError, match="command name 'status' is taken by .*libexec/status"):
        build.commands(tmp_path)


def test_what_a_script_imports_is_frozen_in() -> None:
    source = ("import sys\nfrom torcx_tectonic.cli import run_step\nfrom . import nothing\n"
              "def f():\n    import json, os.path\n")
    assert build.script_imports(source, "x") == {"sys", "torcx_tectonic.cli", "json", "os.path"}
    with pytest.raises(build.BuildError, match="x: not Python"):
        build.script_imports("#!/bin/sh\necho hi\n", "x")


def test_the_package_names_the_directories_the_image_has() -> None:
    build.check_layout({key: getattr(installdirs, key) for key in build.LAYOUT})
    with pytest.raises(build.BuildError, match="LIBEXEC_DIR = '/opt/tt', the image has '/usr/libexec/torcx-tectonic'"):
        build.check_layout({**build.LAYOUT, "LIBEXEC_DIR": "/opt/tt"})


def test_units_get_the_image_directories_and_no_placeholder_is_left() -> None:
    text = "Documentation=file:@DOCDIR@/README.md\nExecStart=@LIBEXECDIR@/flow-lock %i\n"
    assert build.substitute_unit(text, "u") == ("Documentation=file:/usr/share/doc/torcx-tectonic/README.md\n"
                                                "ExecStart=/usr/libexec/torcx-tectonic/flow-lock %i\n")
    with pytest.raises(build.BuildError, match="u: placeholder.*@BINDIR@"):
        build.substitute_unit("ExecStart=@BINDIR@/x\n", "u")
    for unit in (build.REPO / "units").iterdir():
        build.substitute_unit(unit.read_text(), str(unit))


def test_only_the_c_library_and_zlib_may_come_from_the_node() -> None:
    allowed = ["libc.so.6", "libm.so.6", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1", "libpthread.so.0",
               "libdl.so.2", "libz.so.1", "linux-vdso.so.1"]
    assert all(build.NODE_LIBRARIES.match(name) for name in allowed)
    assert not any(build.NODE_LIBRARIES.match(name) for name in ("libsystemd.so.0", "libssl.so.3", "libpython3.11.so"))
