"""Kill a step at a chosen system call, in a real systemd, without a hook in the product.

A test drop-in replaces the step unit's ``ExecStart=`` with the same command
under ``strace``: ``-e trace=`` logs the calls that change files (``-y``
shows the path behind each file descriptor), and
``-e inject=SYSCALL:signal=SIGKILL:when=N`` kills the step at the entry of
its N-th call of SYSCALL, before that call does anything. strace counts per
system call, and the calls a step makes to change files are the same run
after run from the same start, so a point found in a reference trace is the
same point in the run that is killed; the killed run's own trace ends with
that call, which the harness checks.

Only the drop-in relaxes the sandbox, for strace alone: ``SystemCallFilter=``
is reset (ptrace is not in ``@system-service``) and strace may write its log.
Everything else about the unit (its other sandboxing, ``ExecStopPost=``, its
conditions) stays as the generator wrote it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from simnode.node import Node

#: The system calls that change files; the kill points are calls of these.
TRACED = ("write", "pwrite64", "rename", "renameat", "renameat2", "link", "linkat", "unlink", "unlinkat", "rmdir",
          "mkdir", "mkdirat", "fsync", "fdatasync", "fchmod")
STRACE_DIR = "/run/tt-strace"
DROPIN_NAME = "90-tt-strace.conf"
_CALL = re.compile(r"(?P<syscall>[a-z0-9_]+)\((?P<args>.*)")


@dataclass(frozen=True)
class Call:
    """One traced system call of a step: its name, which call of that name
    it was (1-based: strace's ``when=``), and strace's line for it."""

    syscall: str
    nth: int
    line: str

    @property
    def completed(self) -> bool:
        """Whether the call ran (a killed call ends with ``= ?``)."""
        return not self.line.rstrip().endswith("= ?")


def parse_trace(text: str) -> list[Call]:
    counts: Counter[str] = Counter()
    calls = []
    for line in text.splitlines():
        match = _CALL.match(line)
        if match is None or match["syscall"] not in TRACED:
            continue
        counts[match["syscall"]] += 1
        calls.append(Call(match["syscall"], counts[match["syscall"]], line))
    return calls


def unit_name(flow: str, step: str) -> str:
    return f"torcx-{flow}-{step}.service"


class StepUnderStrace:
    """One step unit run under strace: traced, or killed at a call."""

    def __init__(self, node: Node, flow: str, step: str, entry: str, libexec: str = "/usr/libexec/torcx-tectonic"):
        self.node, self.flow, self.step = node, flow, step
        self.unit = unit_name(flow, step)
        self.dropin = f"/etc/systemd/system/{self.unit}.d/{DROPIN_NAME}"
        self.env_file = f"{STRACE_DIR}/{flow}-{step}.env"
        self.trace_file = f"{STRACE_DIR}/{flow}-{step}.trace"
        self.command = f"{libexec}/{entry} --flow {flow} --step {step}"

    def install(self) -> None:
        self.node.run("mkdir", "-p", STRACE_DIR)
        self.node.write(self.dropin, (
            "# integration test only: the step under strace, which may kill it at a chosen call\n"
            "[Service]\n"
            "SystemCallFilter=\n"
            f"ReadWritePaths={STRACE_DIR}\n"
            f"EnvironmentFile={self.env_file}\n"
            "ExecStart=\n"
            f"ExecStart=/usr/bin/strace $TT_STRACE {self.command}\n"))
        self.node.systemctl("daemon-reload")

    def remove(self) -> None:
        self.node.run("rm", "-f", self.dropin)
        self.node.systemctl("daemon-reload")

    def configure(self, kill: Call | None = None) -> None:
        """Trace the unit's next runs, killing them at ``kill`` if given."""
        options = ["-qq", "-y", "-e", "signal=none", "-o", self.trace_file, "-e", f"trace={','.join(TRACED)}"]
        if kill is not None:
            options += ["-e", f"inject={kill.syscall}:signal=SIGKILL:when={kill.nth}"]
        self.node.write(self.env_file, f'TT_STRACE="{" ".join(options)}"\n')

    def run(self, kill: Call | None = None, timeout: float = 120) -> list[Call]:
        """Start the unit alone (``ignore-requirements``: the steps before it
        do not run again) and wait for it; the calls it made, in order."""
        self.configure(kill)
        self.node.run("rm", "-f", self.trace_file)
        self.node.systemctl("start", "--job-mode=ignore-requirements", self.unit, check=False, timeout=timeout)
        return parse_trace(self.node.read(self.trace_file))


#: Where the node keeps what must survive a power cut (/run and the private /tmp do not).
PERSISTENT = ("/etc/", "/var/", "/opt/")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD_PATH = re.compile(r"^[a-z0-9_]+\([0-9]+<([^>]*)>")


def _paths(call: Call) -> list[str]:
    return _QUOTED.findall(call.line.split(") = ")[0])


def _fd_path(call: Call) -> str | None:
    match = _FD_PATH.match(call.line)
    return match[1] if match else None


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def sync_problems(calls: list[Call]) -> list[str]:
    """Where a step's writes would not survive a power cut: a file renamed
    into place before it was synced (or written after), a rename, a new
    directory or a removal whose directory is not synced after it."""
    problems = []
    done = [c for c in calls if c.syscall == "write" or (c.completed and c.line.rstrip().endswith(" = 0"))]

    def synced_after(index: int, directory: str) -> bool:
        return any(c.syscall in ("fsync", "fdatasync") and _fd_path(c) == directory for c in done[index + 1:])

    for index, call in enumerate(done):
        paths = _paths(call)
        if call.syscall == "rename" and len(paths) == 2 and paths[1].startswith(PERSISTENT):
            source, target = paths
            if source.endswith(".tmp"):
                synced = [i for i, c in enumerate(done[:index]) if c.syscall == "fsync" and _fd_path(c) == source]
                written_after = [c for c in done[synced[-1] + 1:index] if c.syscall == "write"
                                 and _fd_path(c) == source] if synced else []
                if not synced or written_after:
                    problems.append(f"{target}: renamed from {source} before it was synced: {call.line}")
            if not synced_after(index, _parent(target)):
                problems.append(f"{target}: its directory is not synced after the rename")
        elif call.syscall in ("mkdir", "unlink") and paths and paths[0].startswith(PERSISTENT) \
                and not paths[0].endswith((".tmp", ".link")) and not synced_after(index, _parent(paths[0])):
            problems.append(f"{paths[0]}: {call.syscall} not synced into {_parent(paths[0])}")
    return problems
