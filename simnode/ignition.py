"""Ignition's files stage, for a test node: what a config writes, and nothing else.

A Flatcar node gets the product from its Ignition config alone, so the test
of that path writes exactly what the shipped example would write: its files
(``data:`` URLs decoded; remote sources from a map the test provides, checked
against ``verification.hash`` as Ignition checks them), its links and its
unit drop-ins. Only
the parts of spec 3.x the example uses are understood; anything else is an
error rather than silently skipped, so the example cannot grow a part the
test does not apply.
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


def _contents(entry: Mapping[str, Any], remote: Mapping[str, bytes], where: str) -> bytes:
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
        check_hash(data, expected, where)
    return data


def files_stage(document: Mapping[str, Any], remote: Mapping[str, bytes] | None = None) -> Written:
    """Everything an Ignition spec 3 config writes to the root file system."""
    version = document.get("ignition", {}).get("version")
    if version not in SPEC_VERSIONS:
        raise IgnitionError(f"ignition.version {version!r}: expected one of {', '.join(SPEC_VERSIONS)}")
    if document.get("passwd") or document.get("kernelArguments"):
        raise IgnitionError("only storage (files, links, directories) and unit drop-ins are applied here")
    storage = document.get("storage", {})
    unknown = set(storage) - {"files", "links", "directories"}
    if unknown:
        raise IgnitionError(f"storage sections {sorted(unknown)} are not supported here")
    written = Written()
    for entry in storage.get("directories", []):
        written.directories.append(entry["path"])
    for entry in storage.get("files", []):
        path = entry["path"]
        if entry.get("append"):
            raise IgnitionError(f"{path}: append is not supported here")
        written.files[path] = _contents(entry, remote or {}, path)
        written.modes[path] = int(entry.get("mode", 0o644))
    for entry in storage.get("links", []):
        if entry.get("hard"):
            raise IgnitionError(f"{entry['path']}: hard links are not supported here")
        written.links[entry["path"]] = entry["target"]
    for unit in document.get("systemd", {}).get("units", []):
        unsupported = set(unit) - {"name", "dropins"}
        if unsupported:
            raise IgnitionError(f"{unit['name']}: {sorted(unsupported)} are not supported here (only drop-ins)")
        for dropin in unit.get("dropins", []):
            path = f"{UNIT_DIR}/{unit['name']}.d/{dropin['name']}"
            written.files[path] = dropin.get("contents", "").encode()
            written.modes[path] = 0o644
    return written
