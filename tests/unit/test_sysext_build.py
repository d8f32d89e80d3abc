"""`make sysext`'s decisions that need no build: names, layout checks, placeholders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sysext import build


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


def test_units_get_the_image_directories_and_no_placeholder_is_left() -> None:
    text = "Documentation=file:@DOCDIR@/README.md\nExecStart=@LIBEXECDIR@/flow-lock %i\n"
    assert build.substitute_unit(text, "u") == ("Documentation=file:/usr/share/doc/torcx-tectonic/README.md\n"
                                                "ExecStart=/usr/libexec/torcx-tectonic/flow-lock %i\n")
    with pytest.raises(build.BuildError, match="u: placeholder.*@BINDIR@"):
        build.substitute_unit("ExecStart=@BINDIR@/x\n", "u")
    for unit in (build.REPO / "units").iterdir():
        build.substitute_unit(unit.read_text(), str(unit))


LDD = """\
\tlinux-vdso.so.1 (0x00007ffd4d9e5000)
\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0a1c000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a1be1f000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0a1c1f4000)
"""


def test_every_library_is_taken_the_loader_and_the_c_library_included() -> None:
    found = build.ldd_libraries(LDD, "_ssl.so")
    assert found == {"libssl.so.3": "/lib/x86_64-linux-gnu/libssl.so.3", "libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
                     "ld-linux-x86-64.so.2": "/lib64/ld-linux-x86-64.so.2"}
    assert build.loader_name({name: Path(p) for name, p in found.items()}) == "ld-linux-x86-64.so.2"
    with pytest.raises(build.BuildError, match="_ssl.so needs libssl.so.3, which is found nowhere"):
        build.ldd_libraries("\tlibssl.so.3 => not found\n", "_ssl.so")
    assert build.ldd_libraries("\tstatically linked\n", "x") == {}


def test_entry_points_are_the_scripts_with_the_programs_interpreter() -> None:
    script = build.entry_script("#!/usr/bin/python3\nimport sys\n", "/opt/tt")
    assert script == "#!/opt/tt/bin/python3 -IS\nimport sys\n"
    with pytest.raises(build.BuildError, match="without a #! line"):
        build.entry_script("import sys\n", "/opt/tt")


def test_modules_go_where_their_name_says() -> None:
    assert build.module_file("a.b", "/x/a/b.py") == "a/b.py"
    assert build.module_file("a.b", "/x/a/b/__init__.py") == "a/b/__init__.py"
    toc = {"pure": [["json", "/usr/lib/python3.11/json/__init__.py", "PYMODULE"]],
           "binaries": [["python3.11/lib-dynload/_ssl.so", "/usr/lib/python3.11/lib-dynload/_ssl.so", "EXTENSION"],
                        ["yaml/_yaml.so", "/d/yaml/_yaml.so", "EXTENSION"],
                        ["libssl.so.3", "/lib/libssl.so.3", "BINARY"]],
           "datas": [["certifi/cacert.pem", "/d/certifi/cacert.pem", "DATA"], ["base_library.zip", "/w/b.zip", "DATA"]]}
    needs = build.needs_from(toc, ["encodings/__init__.pyc", "encodings/"], Path("/usr/lib/python3.11"))
    assert needs.modules == {"json/__init__.py": Path("/usr/lib/python3.11/json/__init__.py"),
                             "encodings/__init__.py": Path("/usr/lib/python3.11/encodings/__init__.py")}
    # the libraries are found from the ELF files, not taken from the analysis
    assert needs.extensions == {"_ssl.so": Path("/usr/lib/python3.11/lib-dynload/_ssl.so"),
                                "yaml/_yaml.so": Path("/d/yaml/_yaml.so")}
    assert needs.data == {"certifi/cacert.pem": Path("/d/certifi/cacert.pem")}


def test_the_bundled_package_names_the_layouts_directories() -> None:
    text = build.installdirs_module({**build.LAYOUT, "LIBEXEC_DIR": "/opt/torcx-tectonic/libexec"})
    assert 'LIBEXEC_DIR = "/opt/torcx-tectonic/libexec"\n' in text and 'BIN_DIR = "/usr/bin"\n' in text
    assert text.split('"""')[1] == (build.REPO / "torcx_tectonic/installdirs.py").read_text().split('"""')[1]


def test_every_time_in_the_image_is_the_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build.source_date_epoch() == 1700000000
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    commit_time = subprocess.run(["git", "-C", str(build.REPO), "log", "-1", "--format=%ct"], capture_output=True,
                                 text=True, check=True).stdout
    assert build.source_date_epoch() == int(commit_time)
