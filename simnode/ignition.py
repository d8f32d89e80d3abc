"""Ignition's files stage, for a test node: what a config writes, and nothing else.

A Flatcar node gets the product from its Ignition config alone, so the test
of that path writes exactly what the shipped example would write: its files
(``data:`` URLs decoded; remote sources from a map the test provides, checked
against ``verification.hash`` as Ignition checks them), its links and its
unit drop-ins, and the units it enables. Only
the parts of spec 3.x the Flatcar example uses and of spec 2.x the /opt
install's config uses are understood (2.x: every file names the ``root``
file system, modes are numbers, hashes sha512 only); anything else is an
error rather than silently skipped, so a config cannot grow a part the test
does not apply.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Ignition spec versions whose files/links/directories sections this understands.
SPEC_VERSIONS = ("3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0")
#: Spec 2.x versions (Container Linux's Ignition 0.34 reads these, and no 3.x).
SPEC2_VERSIONS = ("2.0.0", "2.1.0", "2.2.0", "2.3.0")
#: The keys of a storage.files entry, by spec major version.
FILE_KEYS = {2: {"filesystem", "path", "mode", "contents", "user", "group", "append"},
             3: {"path", "mode", "contents", "user", "group", "overwrite", "append"}}
#: Where Ignition writes units and drop-ins.
UNIT_DIR = "/etc/systemd/system"
HASH_FUNCTIONS = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}


class IgnitionError(ValueError):
    """The config asks for something the files stage would refuse (or this one cannot do)."""


@dataclass
class Written:
    """What the files stage puts on the node: file contents and modes by path, links by path."""

    files: dict[str, bytes] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    enabled: list[str] = field(default_factory=list)


def decode_data_url(url: str) -> bytes:
    """The bytes of an RFC 2397 ``data:`` URL (percent-encoded or ``;base64``)."""
    if not url.startswith("data:") or "," not in url:
        raise IgnitionError(f"not a data URL: {url[:60]!r}")
    header, _, payload = url[len("data:"):].partition(",")
    if header.split(";")[-1] == "base64":
        return base64.b64decode(payload, validate=True)
    return urllib.parse.unquote_to_bytes(payload)


def check_hash(content: bytes, expected: str, where: str) -> None:
    """Ignition's ``verification.hash``: ``<function>-<hex digest>``."""
    function, _, digest = expected.partition("-")
    if function not in HASH_FUNCTIONS or not digest:
        raise IgnitionError(f"{where}: hash {expected!r} is not <{'|'.join(HASH_FUNCTIONS)}>-<hex>")
    actual = HASH_FUNCTIONS[function](content).hexdigest()
    if actual != digest.lower():
        raise IgnitionError(f"{where}: {function} is {actual}, the config expects {digest}")


def _check_entry(entry: Mapping[str, Any], major: int, where: str) -> None:
    """What spec ``major`` requires of a files/links/directories entry beyond its own keys."""
    if major == 2 and entry.get("filesystem") != "root":
        raise IgnitionError(f"{where}: spec 2 entries name their file system (\"filesystem\": \"root\")")
    if major == 3 and "filesystem" in entry:
        raise IgnitionError(f"{where}: spec 3 has no \"filesystem\" (it is spec 2's)")
    if not str(entry.get("path", "")).startswith("/"):
        raise IgnitionError(f"{where}: path {entry.get('path')!r} is not absolute")
    mode = entry.get("mode", 0o644)
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777:
        raise IgnitionError(f"{where}: mode {mode!r} is not a number from 0 to 4095 (0o7777)")


def _contents(entry: Mapping[str, Any], remote: Mapping[str, bytes], where: str, major: int) -> bytes:
    contents = entry.get("contents", {})
    unknown = set(contents) - {"source", "verification", "compression"}
    if unknown or contents.get("compression"):
        raise IgnitionError(f"{where}: contents fields {sorted(unknown) or ['compression']} are not supported here")
    source = contents.get("source")
    if source is None:
        return b""
    if source.startswith("data:"):
        data = decode_data_url(source)
    elif source in remote:
        data = remote[source]
    else:
        raise IgnitionError(f"{where}: nothing serves {source} in this test")
    expected = contents.get("verification", {}).get("hash")
    if expected:
        if major == 2 and not expected.startswith("sha512-"):
            raise IgnitionError(f"{where}: spec 2 verifies sha512 only, not {expected.partition('-')[0]!r}")
        check_hash(data, expected, where)
    return data


def files_stage(document: Mapping[str, Any], remote: Mapping[str, bytes] | None = None) -> Written:
    """Everything an Ignition spec 2 or 3 config writes to the root file system."""
    version = document.get("ignition", {}).get("version")
    if version not in SPEC_VERSIONS + SPEC2_VERSIONS:
        known = ", ".join(SPEC2_VERSIONS + SPEC_VERSIONS)
        raise IgnitionError(f"ignition.version {version!r}: expected one of {known}")
    major = int(version.split(".")[0])
    others = sorted(set(document["ignition"]) - {"version"})
    if others:
        raise IgnitionError(f"ignition sections {others} are not supported here")
    if document.get("passwd") or document.get("kernelArguments"):
        raise IgnitionError("only storage (files, links, directories) and unit drop-ins are applied here")
    storage = document.get("storage", {})
    unknown = set(storage) - {"files", "links", "directories"}
    if unknown:
        raise IgnitionError(f"storage sections {sorted(unknown)} are not supported here")
    written = Written()
    for entry in storage.get("directories", []):
        _check_entry(entry, major, f"directory {entry.get('path')}")
        written.directories.append(entry["path"])
    for entry in storage.get("files", []):
        path = entry.get("path")
        _check_entry(entry, major, f"file {path}")
        unknown = set(entry) - FILE_KEYS[major]
        if unknown:
            raise IgnitionError(f"{path}: spec {major} files have no {sorted(unknown)}")
        if entry.get("append"):
            raise IgnitionError(f"{path}: append is not supported here")
        written.files[path] = _contents(entry, remote or {}, path, major)
        written.modes[path] = int(entry.get("mode", 0o644))
    for entry in storage.get("links", []):
        _check_entry(entry, major, f"link {entry.get('path')}")
        if entry.get("hard"):
            raise IgnitionError(f"{entry['path']}: hard links are not supported here")
        written.links[entry["path"]] = entry["target"]
    for unit in document.get("systemd", {}).get("units", []):
        unsupported = set(unit) - {"name", "dropins", "enabled"}
        if unsupported:
            raise IgnitionError(f"{unit['name']}: {sorted(unsupported)} are not supported here (drop-ins, enabled)")
        if not isinstance(unit.get("enabled", False), bool):
            raise IgnitionError(f"{unit['name']}: enabled {unit['enabled']!r} is not true or false")
        if unit.get("enabled"):
            written.enabled.append(unit["name"])
        for dropin in unit.get("dropins", []):
            path = f"{UNIT_DIR}/{unit['name']}.d/{dropin['name']}"
            written.files[path] = dropin.get("contents", "").encode()
            written.modes[path] = 0o644
    return written
