"""Kubernetes' version-skew policy for the kubelet, as pure functions.

The kubelet may be older than the api-server by a few minors, never newer
(https://kubernetes.io/releases/version-skew-policy/): up to three minors
since Kubernetes 1.28, two before. Nodes are upgraded one minor at a time,
as kubeadm's upgrade guide asks. A kubelet image is chosen from the versions
the signed checksum list offers by these rules only, so the choice is
tested as a table, without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..edges.inputfile import grammar
from ..errors import InputError

#: A kubelet image's version as the sysext-bakery writes it: kubernetes-v1.30.4-x86-64.raw.
IMAGE_VERSION = grammar("a version like v1.30.4", r"v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})",
                        32)
#: The api-server's gitVersion: major.minor.patch and whatever follows (+coreos.0, -rc.1).
_API_VERSION = grammar("a Kubernetes version like v1.30.4", r"v?(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\."
                       r"(0|[1-9][0-9]{0,8})(?:[-+][0-9A-Za-z.+_-]*)?", 128)
#: (first minor of 1.x, how many minors the kubelet may trail the api-server from then on)
SKEW_TABLE = ((0, 2), (28, 3))


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @property
    def minor_text(self) -> str:
        return f"{self.major}.{self.minor}"


class NoKubeletVersion(InputError):
    """No offered kubelet image is allowed beside the api-server's version."""


def api_version(text: str, origin: str) -> Version:
    """The api-server's ``major.minor.patch`` (a gitVersion like v1.30.4+k3s1)."""
    match = _API_VERSION.pattern.fullmatch(_API_VERSION.check(text, "Kubernetes version", origin))
    assert match is not None  # checked
    return Version(int(match[1]), int(match[2]), int(match[3]))


def image_version(text: str) -> Version | None:
    """A kubelet image's version (None: not one of the bakery's ``vX.Y.Z``)."""
    if not IMAGE_VERSION.matches(text):
        return None
    major, minor, patch = text[1:].split(".")
    return Version(int(major), int(minor), int(patch))


def max_skew(api: Version) -> int:
    """How many minors the kubelet may trail an api-server of ``api``."""
    return next(skew for first, skew in reversed(SKEW_TABLE) if api.minor >= first)


def choose_kubelet(api: Version, offered: Iterable[Version], current: Version | None) -> tuple[Version, str]:
    """The kubelet version for an api-server of version ``api``, from the
    ``offered`` ones, for a node whose kubelet is ``current`` (None: none
    yet), and why: never newer than the api-server, at most ``max_skew``
    minors older, at most one minor above ``current`` and not below it when
    something newer is allowed; the api-server's own version when allowed,
    else the newest allowed."""
    skew = max_skew(api)
    ceiling = api.minor if current is None or current.major != api.major else min(api.minor, current.minor + 1)
    allowed = sorted(v for v in set(offered)
                     if v.major == api.major and v <= api and api.minor - v.minor <= skew and v.minor <= ceiling)
    if current is not None and any(v >= current for v in allowed):
        allowed = [v for v in allowed if v >= current]  # never older than a kubelet the policy still allows
    if not allowed:
        raise NoKubeletVersion(
            f"no kubelet image for api-server {api}: the skew policy allows {api.major}.{max(api.minor - skew, 0)} "
            f"to {api}" + (f", one minor above the node's kubelet {current} at most" if ceiling < api.minor else "")
            + f"; offered: {', '.join(map(str, sorted(set(offered)))) or 'none'}")
    if api in allowed:
        return api, f"the api-server's version {api}"
    chosen = allowed[-1]
    if ceiling < api.minor:
        return chosen, (f"the newest offered of {api.major}.{ceiling}: one minor above the node's kubelet {current} "
                        f"at a time, towards the api-server's {api}")
    return chosen, f"the newest offered within {skew} minors below the api-server's {api} ({api} is not offered)"
