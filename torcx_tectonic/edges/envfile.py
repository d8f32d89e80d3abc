"""Shell-style ``KEY=value`` files: os-release, torcx metadata, kubelet.env.

All three are read the way systemd reads an ``EnvironmentFile=``: comments
start with ``#`` or ``;``, values may be quoted, a trailing backslash
continues a line, later assignments win. A value's words are read as
``shlex.split`` reads them (POSIX shell quoting, no comments) and joined by
one space.
"""

from __future__ import annotations

import re

from ..errors import InputError

ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<value>.*)$")

#: One piece of a value as shlex reads it: blanks between words, a single-
#: or double-quoted part, a backslash-escaped character, or unquoted text.
_PIECE = re.compile(
    r"""(?P<blank>[ \t\r\n]+)
      | '(?P<single>[^']*)'
      | "(?P<double>[^"\\]*(?:\\.[^"\\]*)*)"
      | \\(?P<escaped>.)
      | (?P<plain>[^ \t\r\n'"\\]+)""",
    re.VERBOSE | re.DOTALL,
)
#: Inside double quotes a backslash escapes only '"' and itself.
_DOUBLE_QUOTED_ESCAPE = re.compile(r'\\(["\\])')


def _words(value: str) -> list[str]:
    """The words of ``value``, as ``shlex.split(value)`` reads them, in one
    pass: shlex adds to a word one character at a time, which takes time
    quadratic in its length (22 s for a 1 MiB quoted value)."""
    words: list[str] = []
    word: list[str] | None = None  # None between words: "" is a word, an empty one
    pos = 0
    while pos < len(value):
        piece = _PIECE.match(value, pos)
        if piece is None:  # an open quote, or a backslash at the very end
            trailing_backslashes = len(value) - len(value.rstrip("\\"))
            escaping = value[pos] != "'" and trailing_backslashes % 2 == 1
            raise ValueError("No escaped character" if escaping else "No closing quotation")
        pos = piece.end()
        kind = piece.lastgroup
        assert kind is not None  # each alternative is one named group
        if kind == "blank":
            if word is not None:
                words.append("".join(word))
                word = None
            continue
        text = piece[kind]
        if kind == "double":
            text = _DOUBLE_QUOTED_ESCAPE.sub(r"\1", text)
        if word is None:
            word = []
        word.append(text)
    if word is not None:
        words.append("".join(word))
    return words


def _unquote(value: str, where: str) -> str:
    value = value.strip()
    if not value:
        return ""
    try:
        return " ".join(_words(value))
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
