"""One frozen program for every entry point of the bundle (a multi-call binary).

The extension image carries no Python interpreter for the node to run scripts
with: PyInstaller freezes this launcher together with the ``torcx_tectonic``
package and its libraries. The generator, every libexec step script and the
operator command are symlinks to the frozen launcher; the name it was started
by (``basename(argv[0])``, which systemd sets to the unit's ``ExecStart=``
path) picks the bundled copy of that script from ``commands/`` beside the
launcher, and the script runs unchanged as ``__main__``. So the scripts, not
this file, decide what a command does, and a new or rewritten script needs
no change here.

Started under its own name (``torcx-tectonic-multicall COMMAND ARGS...``),
it runs COMMAND; ``--list`` prints the commands.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import MutableMapping, Sequence
from pathlib import Path

#: The launcher's own file name in the image, for running a command by name.
MULTICALL_NAME = "torcx-tectonic-multicall"
#: Directory beside the launcher holding one script per command.
COMMANDS_DIR = "commands"
#: Exit status for a command that does not exist (as a shell's "not found").
EXIT_UNKNOWN = 127
#: Exit status for bad usage of the launcher itself.
EXIT_USAGE = 2


class LauncherError(Exception):
    """A command name that cannot be run; ``status`` is the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def available(directory: Path) -> list[str]:
    """The commands the image has, sorted."""
    try:
        return sorted(p.name for p in directory.iterdir() if p.is_file())
    except FileNotFoundError:
        return []


def resolve(argv: Sequence[str], directory: Path) -> tuple[Path, list[str]]:
    """The script to run and the ``sys.argv`` it sees, from the launcher's argv.

    ``argv[0]``'s base name is the command; under the launcher's own name the
    command is the first argument. The script sees itself as ``argv[0]``, as
    when it is run directly (argparse names it in its messages).
    """
    if not argv:
        raise LauncherError(f"{MULTICALL_NAME}: started without argv[0]", EXIT_USAGE)
    name, args = os.path.basename(argv[0]), list(argv[1:])
    if name == MULTICALL_NAME:
        if not args or args[0] in ("-h", "--help", "--list"):
            raise LauncherError(
                f"usage: {MULTICALL_NAME} COMMAND [ARGS...]\n"
                f"commands: {', '.join(available(directory)) or '(none)'}",
                0 if args else EXIT_USAGE,
            )
        name, args = args[0], args[1:]
    if not name or name.startswith(".") or "/" in name:
        raise LauncherError(f"{MULTICALL_NAME}: not a command name: {name!r}", EXIT_UNKNOWN)
    script = directory / name
    if not script.is_file():
        raise LauncherError(
            f"{MULTICALL_NAME}: no command {name!r} in {directory}; "
            f"commands: {', '.join(available(directory)) or '(none)'}",
            EXIT_UNKNOWN,
        )
    return script, [argv[0] if os.path.basename(argv[0]) == name else name, *args]


def restore_environment(environ: MutableMapping[str, str]) -> None:
    """Undo what PyInstaller's bootloader added to the environment.

    It prepends the bundle's library directory to ``LD_LIBRARY_PATH`` (saving
    the caller's value in ``LD_LIBRARY_PATH_ORIG``) and sets ``_PYI_*``
    variables, then re-executes itself with them. This process needed them;
    the programs the steps start (``gpgv``) must find the node's own
    libraries, and another of our commands started by a step must start
    afresh, so neither may inherit them.
    """
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        environ.pop("LD_LIBRARY_PATH", None)
    else:
        environ["LD_LIBRARY_PATH"] = original
    for key in [k for k in environ if k.startswith("_PYI_")]:
        del environ[key]


def run_script(script: Path, argv: list[str]) -> None:
    """Run a script as ``__main__`` (what ``python3 SCRIPT`` does, as runpy.run_path)."""
    code = compile(script.read_bytes(), str(script), "exec")
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    module.__builtins__ = __builtins__  # type: ignore[attr-defined]
    sys.modules["__main__"] = module
    sys.argv = argv
    exec(code, module.__dict__)


def commands_directory() -> Path:
    """``commands/`` beside the launcher's real file (symlinks resolved)."""
    return Path(sys.executable).resolve().parent / COMMANDS_DIR


def main() -> int:
    directory = commands_directory()
    try:
        script, argv = resolve(sys.argv, directory)
    except LauncherError as err:
        print(err, file=sys.stdout if err.status == 0 else sys.stderr)
        return err.status
    if getattr(sys, "frozen", False):
        restore_environment(os.environ)
    run_script(script, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
