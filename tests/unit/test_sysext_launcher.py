"""The image's multi-call launcher: which script a name runs, with what argv and environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sysext.launcher import (
    EXIT_UNKNOWN,
    EXIT_USAGE,
    MULTICALL_NAME,
    LauncherError,
    resolve,
    restore_environment,
    run_script,
)


@pytest.fixture
def commands(tmp_path: Path) -> Path:
    for name in ("torcx-tectonic-generator", "install-addons", "status"):
        (tmp_path / name).write_text(f"# {name}\n")
    return tmp_path


def test_the_name_it_was_started_by_picks_the_script(commands: Path) -> None:
    script, argv = resolve(["/usr/libexec/torcx-tectonic/install-addons", "--flow", "bootstrap"], commands)
    assert script == commands / "install-addons"
    assert argv == ["/usr/libexec/torcx-tectonic/install-addons", "--flow", "bootstrap"]
    script, argv = resolve(["/usr/lib/systemd/system-generators/torcx-tectonic-generator", "/run/a", "/run/b",
                            "/run/c"], commands)
    assert script.name == "torcx-tectonic-generator" and argv[1:] == ["/run/a", "/run/b", "/run/c"]


def test_under_its_own_name_the_first_argument_is_the_command(commands: Path) -> None:
    script, argv = resolve([f"/usr/lib/torcx-tectonic/{MULTICALL_NAME}", "status", "-v"], commands)
    assert script == commands / "status" and argv == ["status", "-v"]


@pytest.mark.parametrize("args, status", [([], EXIT_USAGE), (["--list"], 0), (["--help"], 0)])
def test_without_a_command_it_lists_them(commands: Path, args: list[str], status: int) -> None:
    with pytest.raises(LauncherError) as err:
        resolve([MULTICALL_NAME, *args], commands)
    assert err.value.status == status
    assert "install-addons, status, torcx-tectonic-generator" in str(err.value)


@pytest.mark.parametrize("name", ["no-such-step", "..", ".hidden", "../../bin/sh", ""])
def test_an_unknown_or_odd_name_runs_nothing(commands: Path, name: str) -> None:
    with pytest.raises(LauncherError) as err:
        resolve([MULTICALL_NAME, name], commands)
    assert err.value.status == EXIT_UNKNOWN


def test_a_directory_is_not_a_command(commands: Path) -> None:
    (commands / "subdir").mkdir()
    with pytest.raises(LauncherError, match="no command 'subdir'"):
        resolve(["/x/subdir"], commands)


def test_the_environment_is_the_callers_again() -> None:
    bundle = "/usr/lib/torcx-tectonic/_internal"
    env = {"LD_LIBRARY_PATH": f"{bundle}:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib", "_PYI_ARCHIVE_FILE": "x",
           "_PYI_PARENT_PROCESS_LEVEL": "1", "PATH": "/usr/bin", "HTTPS_PROXY": "http://proxy:3128"}
    restore_environment(env)
    assert env == {"LD_LIBRARY_PATH": "/opt/lib", "PATH": "/usr/bin", "HTTPS_PROXY": "http://proxy:3128"}
    env = {"LD_LIBRARY_PATH": bundle, "_PYI_LINUX_PROCESS_NAME": "status", "PATH": "/usr/bin"}
    restore_environment(env)
    assert env == {"PATH": "/usr/bin"}


def test_a_script_runs_as_main_with_its_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    script = tmp_path / "probe"
    out = tmp_path / "out"
    script.write_text("#!/usr/bin/python3\nimport sys\n"
                      f"open({str(out)!r}, 'w').write(repr((__name__, __file__, sys.argv)))\n"
                      "if __name__ == '__main__':\n    sys.exit(3)\n")
    with pytest.raises(SystemExit) as exit_:
        run_script(script, ["probe", "--flag"])
    assert exit_.value.code == 3
    assert out.read_text() == repr(("__main__", str(script), ["probe", "--flag"]))
