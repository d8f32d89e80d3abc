"""The one way outside input enters the package.

Ignition, the installer, torcx, update_engine and operators write the files
this tool reads; a bucket and an api-server send the rest. Every such file is
read by ``read_bytes``/``read_text``: only a regular file (never a directory,
a FIFO that would block or a device that never ends), at most a size no real
document comes near, decoded as strict UTF-8 without NUL bytes. Anything else
becomes one error naming the path and what was expected, never a traceback
or a hang. JSON goes through ``parse_json`` (no duplicate keys, no NaN, no
nesting deep enough to exhaust the stack), and values that become part of a
URL, a path or a file we write are checked against their ``Grammar`` first;
every such grammar is defined at the end of this module, in one place (as
paths.py holds every path), so each is checked the same way everywhere.

The generator reads its configuration through this module at every boot, so
what only the steps need (``json``, ``urllib.parse``, each grammar's compiled
pattern) is loaded when first used, not at import.
"""

from __future__ import annotations

import os
import stat

from ..errors import InputError, TorcxTectonicError, shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    from collections.abc import Callable
    from typing import Any, Union

    #: A file name as text or as a pathlib.Path.
    PathLike = Union[str, "os.PathLike[str]"]

#: Every document read is a few KiB; the largest (a manifest) stays far below.
MAX_FILE_BYTES = 1 << 20
#: Digits of a JSON integer: more is never a real count or size.
MAX_JSON_INT_DIGITS = 40

ErrorType = type[TorcxTectonicError]


def read_bytes(path: PathLike, expected: str, *, limit: int = MAX_FILE_BYTES, error: ErrorType = InputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    data = _read(path, expected, limit, error, missing_ok=False)
    assert data is not None  # missing_ok=False raises instead
    return data


def read_text(path: PathLike, expected: str, *, limit: int = MAX_FILE_BYTES, error: ErrorType = InputError) -> str:
    """A regular file's text: strict UTF-8, no NUL bytes."""
    return decode_text(read_bytes(path, expected, limit=limit, error=error), str(path), expected, error=error)


def read_text_if_exists(
    path: PathLike, expected: str, *, limit: int = MAX_FILE_BYTES, error: ErrorType = InputError
) -> str | None:
    """Like ``read_text``, but None when nothing is at ``path`` (a file
    that is optional, such as next-profile)."""
    data = _read(path, expected, limit, error, missing_ok=True)
    return None if data is None else decode_text(data, str(path), expected, error=error)


def _read(path: PathLike, expected: str, limit: int, error: ErrorType, *, missing_ok: bool) -> bytes | None:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{path}: missing; expected {expected}") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the path
        raise error(f"{path}: cannot open ({_reason(err)}); expected {expected}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode) or not stat.S_ISREG(mode):
            os.close(fd)
            raise error(f"{path}: is {'a directory' if stat.S_ISDIR(mode) else 'not a regular file'}; "
                        f"expected {expected}")
        return read_open(fd, limit, lambda: error(f"{path}: larger than {limit} bytes; expected {expected}"))
    except OSError as err:
        raise error(f"{path}: cannot read ({_reason(err)}); expected {expected}") from None


def read_open(fd: int, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """All of the open file ``fd``, which it closes; ``too_large()`` is
    raised past ``limit`` bytes (one byte more is read to know)."""
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise too_large()
    return data


def _reason(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else str(err)


def decode_text(data: bytes, origin: str, expected: str, *, error: ErrorType = InputError) -> str:
    """Strict UTF-8 without NUL bytes: no format this tool reads has them,
    and a NUL would cut a value short where C code reads it later."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(
            f"{origin}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); expected {expected}"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        raise error(f"{origin}: contains a NUL byte at offset {nul}; expected {expected}")
    return text


def parse_json(data: bytes | str, origin: str, expected: str) -> Any:
    """A JSON document, refusing what would make it ambiguous or costly:
    a key twice in one object, NaN/Infinity, integers longer than
    MAX_JSON_INT_DIGITS digits, nesting deeper than the stack."""
    import json

    text = decode_text(data, origin, expected) if isinstance(data, bytes) else data

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise InputError(f"{origin}: key {shown(key)} appears twice in one object; expected {expected}")
            result[key] = value
        return result

    def whole(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_JSON_INT_DIGITS:
            raise InputError(f"{origin}: a number of {len(digits)} digits; expected {expected}")
        return int(digits)

    def constant(name: str) -> Any:
        raise InputError(f"{origin}: {name} is not JSON; expected {expected}")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_int=whole, parse_constant=constant)
    except json.JSONDecodeError as err:
        raise InputError(f"{origin}:{err.lineno}: not valid JSON ({err.msg}); expected {expected}") from None
    except RecursionError:
        raise InputError(f"{origin}: JSON nested too deeply; expected {expected}") from None


def is_url(value: object, schemes: tuple[str, ...]) -> bool:
    """Whether ``value`` is a URL with one of ``schemes``, a host and (if
    any) a numeric port, made of visible characters only: a URL that the
    HTTP client would refuse later, or read differently, is refused here."""
    if not isinstance(value, str) or not value.isascii() or not value.isprintable() or " " in value:
        return False
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(value)
        port_ok = parts.port is None or parts.port > 0  # .port raises ValueError unless a number up to 65535
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and port_ok


class Grammar:
    """What a value that becomes part of a URL, a path or a file we write
    may look like, said once so that every place checks it the same way.
    The pattern (ASCII-only, matching the whole value) is compiled when a
    value is first checked: most processes check only a few grammars."""

    __slots__ = ("_compiled", "expected", "max_length", "source")

    def __init__(self, expected: str, source: str, max_length: int) -> None:
        self.expected = expected
        #: the regular expression, as written
        self.source = source
        self.max_length = max_length
        self._compiled: re.Pattern[str] | None = None

    def __repr__(self) -> str:
        return f"Grammar({self.expected!r}, {self.source!r}, {self.max_length})"

    @property
    def pattern(self) -> re.Pattern[str]:
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.source, re.ASCII)
        return self._compiled

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and len(value) <= self.max_length and self.pattern.fullmatch(value) is not None

    def check(
        self, value: object, what: str, origin: str, *, error: ErrorType = InputError, hint: str | None = None
    ) -> str:
        """``value`` if it matches; otherwise an error naming ``origin``,
        ``what`` the value is and what was expected."""
        if not isinstance(value, str) or not self.matches(value):
            raise error(f"{origin}: {what} {shown(value)} is not allowed; expected {self.expected}", hint=hint)
        return value


def grammar(expected: str, pattern: str, max_length: int) -> Grammar:
    """A Grammar whose pattern is ASCII-only (``[0-9]`` never matches other
    scripts' digits) and must match the whole value."""
    return Grammar(expected, pattern, max_length)


# --- the grammar of every value that becomes part of a URL, a path or a file we write

#: Kubernetes' DNS-1123 subdomain (node names, annotation prefixes).
DNS_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"

#: torcx image names and references: they become file names in a store, so
#: no path separators, no leading dot and no "..".
NAME = grammar(
    "letters, digits, '.', '_', '+', '-' without '/' or '..' (at most 100 characters)",
    r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.+-]*",
    100,
)
#: An OS version exactly as torcx names a versioned store: VERSION_ID as is,
#: three whole numbers without leading zeros (not v1632.3.0, 1632.03.0,
#: "1632.3.0 ").
OS_VERSION = grammar(
    "MAJOR.MINOR.PATCH, three whole numbers without leading zeros like 1632.3.0",
    r"(?:0|[1-9][0-9]{0,8})\.(?:0|[1-9][0-9]{0,8})\.(?:0|[1-9][0-9]{0,8})",
    29,
)
#: A board names a directory of the bucket, e.g. amd64-usr.
BOARD = grammar("lowercase letters, digits, '_' and '-' like amd64-usr", r"[a-z0-9][a-z0-9_-]*", 64)
#: A Kubernetes version as the api-server's gitVersion and image tags write it.
KUBE_VERSION = grammar(
    "a Kubernetes version like v1.8.4+coreos.0",
    r"v?(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[-+_.][0-9A-Za-z.+_-]*)?",
    128,
)
#: A runtime version an operator pins (``[runtime] pin``, the node's pin
#: annotation): dotted whole numbers with an optional suffix, as Docker and
#: containerd number their releases (17.03, 1.12.6, 24.0.9, 17.03.2-ce); no
#: "v", no spaces, nothing that could name another file in a store.
RUNTIME_VERSION = grammar(
    "a runtime version like 17.03 or 24.0.9: dotted whole numbers, optionally followed by '-' or '+' and letters, "
    "digits or '.'",
    r"[0-9]{1,9}(?:\.[0-9]{1,9}){1,3}(?:[-+][0-9A-Za-z]+(?:\.[0-9A-Za-z]+)*)?",
    64,
)
#: A node name: a DNS-1123 subdomain, as Kubernetes requires of every node.
NODE_NAME = grammar(
    "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)", DNS_SUBDOMAIN, 253
)
