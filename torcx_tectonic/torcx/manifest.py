"""The signed addon package manifest (``torcx-package-list-v0``).

One manifest per board and OS version lists, per package, the versions with
their sha512 and where to get them. The on-disk format is parsed into plain
frozen types; unknown kinds are rejected.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from ..edges.inputfile import BOARD, NAME, OS_VERSION, grammar, is_url, parse_json
from ..edges.source import FILE_URL_EXPECTED, file_url_problem
from ..errors import InputError, shown
from ..paths import VENDOR_STORE

PACKAGE_LIST_KIND = "torcx-package-list-v0"
HASH_PREFIX = "sha512-"
CHUNK_BYTES = 1 << 20
_HEX512 = re.compile(r"^[0-9a-f]{128}$")
#: A location's path: absolute, no "..", nothing a shell or a unit file would read differently.
_LOCATION_PATH = grammar("an absolute path without '..'", r"(?!.*/\.\.(?:/|$))/[A-Za-z0-9_.+:@/-]*", 4096)


def check_name(value: object, what: str, origin: str) -> str:
    """Reject names that could escape a store directory (``../x``, ``a/b``)."""
    return NAME.check(value, what, origin)


@dataclass(frozen=True)
class Location:
    """Where an addon can be found: a path on the OS image or a URL."""

    path: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class PackageVersion:
    version: str
    sha512: str
    source_package: str
    locations: tuple[Location, ...]

    def vendor_path(self, vendor_store: Path = Path(VENDOR_STORE)) -> Path | None:
        """The location inside the OS image's vendor store, if any."""
        for location in self.locations:
            if location.path and Path(location.path).parent == vendor_store:
                return Path(location.path)
        return None

    def url(self) -> str | None:
        return next((loc.url for loc in self.locations if loc.url), None)


@dataclass(frozen=True)
class Package:
    name: str
    default_version: str | None
    versions: tuple[PackageVersion, ...]

    def find(self, version: str) -> PackageVersion | None:
        return next((v for v in self.versions if v.version == version), None)


@dataclass(frozen=True)
class PackageList:
    packages: tuple[Package, ...]
    source: str

    def package(self, name: str) -> Package | None:
        return next((p for p in self.packages if p.name == name), None)

    def versions_of(self, name: str) -> tuple[str, ...]:
        """The versions of ``name`` that can be installed: one listed
        without any location is not offered (as the original tool moves on
        to the next preferred version) rather than chosen and failing later."""
        package = self.package(name)
        return tuple(v.version for v in package.versions if v.locations) if package else ()


def _field(obj: Any, key: str, kind: type, where: str, *, required: bool = True) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        if required:
            raise InputError(f"{where}: missing {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, kind):
        raise InputError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _parse_location(raw: Any, where: str) -> Location:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object with 'path' or 'url'")
    path, url = raw.get("path"), raw.get("url")
    if path is not None:
        _LOCATION_PATH.check(path, "path", where)
    if url is not None and not is_url(url, ("https", "http")) and file_url_problem(url) is not None:
        raise InputError(f"{where}.url: {shown(url)} is not an http(s) URL, nor {FILE_URL_EXPECTED}")
    if path is None and url is None:
        raise InputError(f"{where}: expected 'path' or 'url'")
    return Location(path=path, url=url)


def _parse_version(raw: Any, where: str) -> PackageVersion:
    version = check_name(_field(raw, "version", str, where), "version", where)
    digest = _field(raw, "hash", str, where)
    if not digest.startswith(HASH_PREFIX) or not _HEX512.fullmatch(digest[len(HASH_PREFIX):]):
        raise InputError(f"{where}.hash: {shown(digest)} is not 'sha512-' followed by 128 lowercase hex digits")
    locations = _field(raw, "locations", list, where)
    return PackageVersion(
        version=version,
        sha512=digest[len(HASH_PREFIX):],
        source_package=_field(raw, "sourcePackage", str, where, required=False) or "",
        locations=tuple(_parse_location(loc, f"{where}.locations[{i}]") for i, loc in enumerate(locations)),
    )


def _once(items: Iterable[tuple[str, str]], what: str, where: str) -> None:
    """Refuse a name listed twice: which entry counts would be a silent guess."""
    first: dict[str, str] = {}
    for name, place in items:
        if name in first:
            raise InputError(f"{where}: {what} {shown(name)} is listed twice ({first[name]} and {place}); "
                             "expected each once")
        first[name] = place


def parse_package_list(data: bytes | str, source: str) -> PackageList:
    """Parse and validate a torcx-package-list-v0 document."""
    document = parse_json(data, source, f"a {PACKAGE_LIST_KIND} JSON document")
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind != PACKAGE_LIST_KIND:
        raise InputError(f"{source}: kind is {shown(kind)}; expected {PACKAGE_LIST_KIND!r}")
    value = _field(document, "value", dict, source)
    packages = []
    for i, raw in enumerate(_field(value, "packages", list, f"{source}: value")):
        where = f"{source}: value.packages[{i}]"
        name = check_name(_field(raw, "name", str, where), "package name", where)
        versions = tuple(_parse_version(v, f"{where}.versions[{j}]")
                         for j, v in enumerate(_field(raw, "versions", list, where)))
        _once(((v.version, f"versions[{j}]") for j, v in enumerate(versions)), "version", where)
        packages.append(Package(name=name, default_version=_field(raw, "defaultVersion", str, where, required=False),
                                versions=versions))
    _once(((p.name, f"packages[{i}]") for i, p in enumerate(packages)), "package", f"{source}: value")
    return PackageList(packages=tuple(packages), source=source)


def manifest_url(template: str, board: str, os_version: str) -> str:
    """Fill the Go-template placeholders users already write; the values
    are checked against their grammar and quoted, so neither can move the
    URL to another path (``../../x``) or host."""
    board_segment = quote(BOARD.check(board, "board", "manifest URL"), safe="")
    version_segment = quote(OS_VERSION.check(os_version, "OS version", "manifest URL"), safe="")
    return template.replace("{{.Board}}", board_segment).replace("{{.OSVersion}}", version_segment)


def stream_digest(chunks: Iterable[bytes], algorithm: str = "sha512") -> str:
    """Hash a stream chunk by chunk (an addon never sits in memory whole);
    sha512 unless ``algorithm`` names another of hashlib's."""
    digest = hashlib.new(algorithm)
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def read_chunks(handle: BinaryIO) -> Iterable[bytes]:
    while chunk := handle.read(CHUNK_BYTES):
        yield chunk


def file_digest(path: Path, algorithm: str = "sha512") -> str:
    with path.open("rb") as handle:
        return stream_digest(read_chunks(handle), algorithm)

