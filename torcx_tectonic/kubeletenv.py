"""kubelet environment files (systemd ``EnvironmentFile=`` syntax).

Bootstrap writes ``/etc/kubernetes/kubelet.env`` from the installer's copy,
keeping its keys, comments and order, with ``KUBELET_IMAGE_TAG`` set to the
chosen version. Image tags carry ``_`` where the version has ``+``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .envfile import ASSIGNMENT, logical_lines, parse_env
from .errors import InputError

IMAGE_TAG_KEY = "KUBELET_IMAGE_TAG"


def version_to_tag(version: str) -> str:
    return version.replace("+", "_")


def tag_to_version(tag: str) -> str:
    return tag.replace("_", "+")


def with_value(text: str, key: str, value: str) -> str:
    """The same file with ``key`` set to ``value``: its last assignment is
    replaced in place, or a line is appended; everything else is kept."""
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


def kubelet_version(path: Path) -> str:
    """The Kubernetes version a kubelet environment file selects."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: missing; expected a kubelet environment file with {IMAGE_TAG_KEY}") from None
    tag = parse_env(text, str(path)).get(IMAGE_TAG_KEY)
    if not tag:
        raise InputError(f"{path}: {IMAGE_TAG_KEY} is missing or empty; expected e.g. {IMAGE_TAG_KEY}=v1.8.4_coreos.0")
    return tag_to_version(tag)
