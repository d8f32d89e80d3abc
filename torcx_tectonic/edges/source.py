"""Where a bucket's bytes come from: the URL's scheme decides.

``https://`` and ``http://`` are fetched by :class:`bucket.Bucket` through
its requests session (http.py). ``file://`` names a file on the node: a
mirror on a local disk, a removable disk or a directory an operator carried
to a node with no route out. It is read here, with what HTTP answers get:

- the URL is checked against its grammar before it becomes a path: absolute,
  no host but ``localhost``, no query, fragment or ``%`` escape, and no empty,
  ``.`` or ``..`` segment, so a URL names exactly one path, spelled one way;
- the file itself must be a regular file: not a symbolic link (a URL names
  the file, never where a link points), a directory, a FIFO or a device;
- what is read whole (manifests, signatures) is capped like an HTTP answer;
- a missing file is an error naming the path and the URL, as a 404 names the
  URL (a LocalFileMissing: the step fails at once, as waiting does not bring
  a file to a local disk), and the signature and sha512 checks are the
  bucket's, unchanged.

The units run with ``ProtectSystem=strict`` (everything readable),
``ProtectHome=yes`` and ``PrivateTmp=yes``: a mirror under ``/home``,
``/root``, ``/run/user``, ``/tmp`` or ``/var/tmp`` is invisible to them.
Keep one under ``/srv``, ``/var/lib``, ``/opt``, ``/media`` or ``/mnt``.

The layout of an addon mirror (``[torcx] addon_mirror``) is said here too, in
one place, for the node that reads it and the ``mirror`` command that writes it.
This module imports nothing heavy (logging and threading only when a file is streamed):
config.py uses it at every generator run.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path, PurePath

from ..errors import InputError, LocalFileMissing, NetworkError, shown
from .inputfile import BOARD, OS_VERSION, read_open
from .progress import Progress

FILE_PREFIX = "file://"
HTTP_SCHEMES = ("https", "http")
CHUNK_BYTES = 1 << 20
MAX_PATH_CHARS = 4096
#: What a file:// URL may look like (said once: config, manifests and the mirror command check it).
FILE_URL_EXPECTED = (
    "a file:// URL of an absolute path like file:///srv/mirror/... (no host but localhost, no query, fragment "
    "or '%'; segments of letters, digits and . _ + : @ ~ , = -, none empty, '.' or '..')"
)
_SEGMENT = re.compile(r"[A-Za-z0-9_.+:@~,=-]+", re.ASCII)
#: Places the units cannot see: ProtectHome=yes hides the first three, PrivateTmp=yes empties the others.
HIDDEN_FROM_UNITS = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")
MIRROR_PLACES = "/srv, /var/lib, /opt, /media or /mnt"

#: The addon mirror's layout below its base: <board>/<OS version>/<name>:<version>.torcx.tgz.
ADDONS_DIR = "addons"


def is_file_url(url: str) -> bool:
    """Whether ``url`` is for this module (it is then checked strictly)."""
    return url[:5].lower() == "file:"


def file_url_problem(url: object, *, directory: bool = False) -> str | None:
    """Why ``url`` is not a file:// URL this tool reads, or None when it is;
    the URL of a ``directory`` (a mirror's base) may end with a slash."""
    if not isinstance(url, str):
        return "it is not text"
    if not url.startswith(FILE_PREFIX):
        return "it does not begin with file://"
    rest = url[len(FILE_PREFIX):]
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost"):
        return f"it names the host {shown(host)}"
    if not slash:
        return "it names no path"
    path = "/" + path
    if len(path) > MAX_PATH_CHARS:
        return f"its path is longer than {MAX_PATH_CHARS} characters"
    for char in ("?", "#", "%"):
        if char in path:
            return f"it holds {char!r}"
    segments = path[1:].split("/")
    if directory and path.endswith("/") and len(segments) > 1:
        segments = segments[:-1]  # a directory's trailing slash (a mirror's base)
    for segment in segments:
        if segment in ("", ".", ".."):
            return f"its path has a segment {shown(segment)}"
        if not _SEGMENT.fullmatch(segment):
            return f"its path segment {shown(segment)} holds other characters"
    return None


def file_url_path(url: str, what: str) -> Path:
    """The path a file:// URL names; an InputError when it is not one this
    tool reads."""
    problem = file_url_problem(url)
    if problem is not None:
        raise InputError(f"{what}: {shown(url)} is not allowed: {problem}; expected {FILE_URL_EXPECTED}")
    return Path("/" + url[len(FILE_PREFIX):].partition("/")[2])


def hidden_from_units(path: PurePath | str) -> str | None:
    """The place of ``path`` that the units cannot see (ProtectHome=,
    PrivateTmp=), or None."""
    text = str(path)
    return next((place for place in HIDDEN_FROM_UNITS if text == place or text.startswith(place + "/")), None)


def _hint(path: Path) -> str | None:
    place = hidden_from_units(path)
    if place is None:
        return None
    return (f"the units run with ProtectHome=yes and PrivateTmp=yes and cannot see {place}: "
            f"keep a mirror under {MIRROR_PLACES}")


def _open(path: Path, url: str, what: str, missing: Exception | None) -> int:
    """An open descriptor of the regular file ``path`` (never through a
    symbolic link, never waiting on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            if missing is not None:
                raise missing from None
            raise LocalFileMissing(f"{what}: {path} does not exist ({url})", hint=_hint(path)) from None
        if err.errno == errno.ELOOP:
            raise NetworkError(f"{what}: {path} is a symbolic link ({url}); expected a regular file: "
                               "a file:// URL names the file itself") from None
        raise NetworkError(f"{what}: cannot open {path} ({url}): {err.strerror or err}", hint=_hint(path)) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as err:
        os.close(fd)
        raise NetworkError(f"{what}: cannot read {path} ({url}): {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise NetworkError(f"{what}: {path} is {kind} ({url}); expected a regular file")
    os.set_blocking(fd, True)
    return fd


def read_file_url(url: str, what: str, limit: int, missing: Exception | None = None) -> bytes:
    """The whole file a file:// URL names, of at most ``limit`` bytes (as an
    HTTP answer is capped); ``missing`` is raised when there is no file."""
    path = file_url_path(url, what)
    fd = _open(path, url, what, missing)
    try:
        return read_open(fd, limit, lambda: NetworkError(f"{what}: {url} is larger than {limit} bytes"))
    except OSError as err:
        raise NetworkError(f"{what}: reading {path} ({url}) failed: {err.strerror or err}") from None


def stream_file_url(url: str, what: str) -> Iterator[bytes]:
    """The file a file:// URL names, chunk by chunk (an addon never sits in
    memory whole), logging progress for long copies. The file is checked
    when the first chunk is asked for, as an HTTP download starts then."""
    path = file_url_path(url, what)
    fd = _open(path, url, what, None)
    progress = Progress(what, None)
    try:
        progress.total = os.fstat(fd).st_size
        with progress, os.fdopen(fd, "rb", closefd=False) as handle:
            while chunk := handle.read(CHUNK_BYTES):
                progress.done += len(chunk)
                yield chunk
    except OSError as err:
        raise NetworkError(f"{what}: reading {path} ({url}) broke off after {progress.done} bytes: "
                           f"{err.strerror or err}") from None
    finally:
        os.close(fd)


# --- the addon mirror ---------------------------------------------------------------------------------------


def mirror_parts(board: str, os_version: str, filename: str) -> tuple[str, str, str]:
    """Where an addon lies below an addon mirror's base: its board, its OS
    version, its file name (``<name>:<version>.torcx.tgz``). Addons are built
    for one OS release, so one version may have other bytes for another OS;
    the board and OS version keep them apart. Values are checked first."""
    BOARD.check(board, "board", "addon mirror")
    OS_VERSION.check(os_version, "OS version", "addon mirror")
    if not _SEGMENT.fullmatch(filename) or filename.startswith("."):
        raise InputError(f"addon mirror: file name {shown(filename)} is not allowed; expected name:version.torcx.tgz")
    return board, os_version, filename


def mirrored_addon_url(base: str, board: str, os_version: str, filename: str) -> str:
    """The URL of an addon in the mirror at ``base`` (``[torcx] addon_mirror``)."""
    return "/".join([base.rstrip("/"), *mirror_parts(board, os_version, filename)])
