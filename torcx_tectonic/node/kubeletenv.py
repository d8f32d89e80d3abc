"""kubelet environment files (systemd ``EnvironmentFile=`` syntax).

Bootstrap writes ``/etc/kubernetes/kubelet.env`` from the installer's copy,
keeping its keys, comments and order, with ``KUBELET_IMAGE_TAG`` set to the
chosen version. Image tags carry ``_`` where the version has ``+``. A value
written is one line without control characters, so it can never add a line
(an assignment of its own) to the file.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..edges.envfile import ASSIGNMENT, logical_lines, parse_env
from ..edges.inputfile import KUBE_VERSION, grammar, read_text
from ..errors import InputError, shown

IMAGE_TAG_KEY = "KUBELET_IMAGE_TAG"
_KEY = grammar("a variable name", r"[A-Za-z_][A-Za-z0-9_]*", 256)


def version_to_tag(version: str) -> str:
    return version.replace("+", "_")


def tag_to_version(tag: str) -> str:
    return tag.replace("_", "+")


def with_value(text: str, key: str, value: str) -> str:
    """The same file with ``key`` set to ``value``: its last assignment is
    replaced in place, or a line is appended; everything else is kept."""
    if not _KEY.matches(key) or not value.isprintable():
        raise InputError(f"{key!r}={shown(value)} cannot be written to an environment file; expected a variable "
                         "name and a value without control characters")
    line = f"{key}={shlex.quote(value)}"
    lines = text.splitlines()
    for first, last, logical in reversed(logical_lines(text)):
        match = ASSIGNMENT.match(logical)
        if match and match["key"] == key:
            lines[first:last + 1] = [line]  # a continued assignment is replaced whole
            break
    else:
        lines.append(line)
    return "\n".join(lines) + "\n"


def read_env(path: Path) -> tuple[str, dict[str, str]]:
    """A kubelet environment file's text and values."""
    text = read_text(path, f"a kubelet environment file with {IMAGE_TAG_KEY}")
    return text, parse_env(text, str(path))


def kubelet_version(path: Path) -> str:
    """The Kubernetes version a kubelet environment file selects."""
    tag = read_env(path)[1].get(IMAGE_TAG_KEY)
    if not tag:
        raise InputError(f"{path}: {IMAGE_TAG_KEY} is missing or empty; expected e.g. {IMAGE_TAG_KEY}=v1.8.4_coreos.0")
    version = tag_to_version(tag)
    if not KUBE_VERSION.matches(version):
        raise InputError(f"{path}: {IMAGE_TAG_KEY} {shown(tag)} is not allowed; expected a Kubernetes version tag "
                         "like v1.8.4_coreos.0")
    return version


def with_version(template: Path, version: str) -> str:
    """The installer's kubelet environment file ``template`` with
    ``KUBELET_IMAGE_TAG`` selecting ``version`` (checked as it is written)."""
    KUBE_VERSION.check(version, "version", "kubelet.env")
    return with_value(read_env(template)[0], IMAGE_TAG_KEY, version_to_tag(version))
