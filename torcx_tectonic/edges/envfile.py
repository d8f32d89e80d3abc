"""Shell-style ``KEY=value`` files: os-release, torcx metadata, kubelet.env.

All three are read the way systemd reads an ``EnvironmentFile=``: comments
start with ``#`` or ``;``, values may be quoted, a trailing backslash
continues a line, later assignments win.
"""

from __future__ import annotations

import re
import shlex

from ..errors import InputError

ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<value>.*)$")


def _unquote(value: str, where: str) -> str:
    value = value.strip()
    if not value:
        return ""
    try:
        return " ".join(shlex.split(value, posix=True))
    except ValueError as err:
        raise InputError(f"{where}: bad quoting in value {value!r}: {err}") from None


def logical_lines(text: str) -> list[tuple[int, int, str]]:
    """(first, last) physical line indexes (0-based) and the joined text of
    each logical line: a trailing backslash continues a line."""
    lines: list[tuple[int, int, str]] = []
    pending, start = "", 0
    physical = text.splitlines()
    for index, raw in enumerate(physical):
        if not pending:
            start = index
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        lines.append((start, index, pending + raw))
        pending = ""
    if pending:
        lines.append((start, len(physical) - 1, pending))
    return lines


def parse_env(text: str, origin: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for first, _, line in logical_lines(text):
        lineno = first + 1
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        match = ASSIGNMENT.match(line)
        if not match:
            raise InputError(f"{origin}:{lineno}: expected KEY=value, got {stripped!r}")
        values[match["key"]] = _unquote(match["value"], f"{origin}:{lineno}")
    return values
