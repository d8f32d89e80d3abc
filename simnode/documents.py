"""The largest documents the size limits accept, shaped as hostile or broken
input would be: what the parser bench times and the unit tests parse."""

from __future__ import annotations

MIB = 1 << 20


def large_kubelet_env(size: int = MIB) -> str:
    """A kubelet.env of ``size`` bytes whose last value is one long quoted
    string (as a hostile or broken installer could write it)."""
    head = 'KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\nKUBELET_OPTS="'
    return head + "x" * (size - len(head) - 2) + '"\n'


def large_mappings(size: int = MIB) -> str:
    """Runtime mappings of nearly ``size`` bytes: as many minors (1.100000,
    1.100001, …, each two Docker versions) as fit."""
    head = "kind: VersionManifestV1\nversions:\n  k8s:\n"
    entry = "    1.{}:\n      docker: [17.03, 1.12]\n"
    count = (size - len(head)) // len(entry.format(100000))
    return head + "".join(entry.format(100000 + n) for n in range(count))
