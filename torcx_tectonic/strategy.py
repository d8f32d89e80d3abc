"""Version choice (docs/design.md, 'Version choice') as pure functions of plain data.

Take the Kubernetes version's preferred runtime versions, pick the first one
that the manifest of the OS that runs next offers, install it there, and also
for the other OS when its manifest has the same version. OS versions older
than the remote-addon epoch are skipped.

An operator's pin (docs/design.md, 'Pins') replaces the preference: the
pinned version, offered for every OS version involved, or a failure naming
the pin and what is offered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .edges.inputfile import RUNTIME_VERSION
from .errors import InputError
from .node.osrelease import parse_os_version

#: Addons from a remote bucket exist only from this OS version on.
ADDON_EPOCH = "1520.3.0"


def supports_addons(os_version: str) -> bool:
    return parse_os_version(os_version, "OS version") >= parse_os_version(ADDON_EPOCH, "epoch")


@dataclass(frozen=True)
class Plan:
    """Which runtime version goes into which OS versions' stores."""

    version: str
    os_versions: tuple[str, ...]


class NoRuntimeVersion(InputError):
    """No preferred runtime version is available: docs/design.md, 'When no Docker version fits', says fail
    loudly, naming everything an operator needs to fix it."""


@dataclass(frozen=True)
class Pin:
    """The runtime version an operator holds the node at, and where that was said."""

    version: str
    source: str


def resolve_pin(annotation: str | None, annotation_source: str, configured: str, configured_source: str,
                runtime: str, listed: Mapping[str, Sequence[str]], mapping_source: str) -> Pin | None:
    """The pin in force: the node's annotation, else the configuration key
    (None: neither sets one). Its text must be a runtime version, and one
    the runtime mappings list for some Kubernetes minor (``listed``: minor →
    versions): a version no minor lists is far more likely a typo (1.10 for
    1.12) than a wish, and would hold the node at a runtime no Kubernetes
    release was ever said to accept. A version listed for another minor
    than the cluster's is allowed: holding the runtime a previous minor ran
    is what a pin after a rollback is for."""
    if annotation:
        version, source = annotation, annotation_source
    elif configured:
        version, source = configured, configured_source
    else:
        return None
    RUNTIME_VERSION.check(version, "pin", source)
    if not any(version in versions for versions in listed.values()):
        named = sorted({v for versions in listed.values() for v in versions})
        raise InputError(f"{source}: pin {version} names a {runtime} version the runtime mappings never list for any "
                         f"Kubernetes minor (from {mapping_source}, which list {', '.join(named) or 'none'})",
                         hint="pin one of the listed versions, or add it to the runtime mappings first")
    return Pin(version, source)


def pinned_version(pin: Pin, runtime: str, offers: Mapping[str, Sequence[str]]) -> str:
    """``pin``'s version when every place in ``offers`` (what offers it →
    the versions it offers) offers it: a pin the running or the next OS
    cannot satisfy fails before the reboot, not after."""
    lacking = [f"{where} offers {', '.join(available) or 'none'}" for where, available in offers.items()
               if pin.version not in available]
    if lacking:
        raise NoRuntimeVersion(f"{runtime} is pinned to {pin.version} ({pin.source}), which is not offered: "
                               f"{'; '.join(lacking)}")
    return pin.version


def choose(
    *,
    kube_version: str,
    preferred: Sequence[str],
    mapping_source: str,
    current_os: str,
    next_os: str | None,
    offered: Mapping[str, Sequence[str]],
    runtime: str = "docker",
    pin: Pin | None = None,
) -> Plan | None:
    """Decide the runtime version and the OS versions to install it for.

    ``offered`` maps each OS version whose manifest was read to the runtime
    versions it lists. Returns None when no OS involved supports addons.
    A ``pin`` wins over ``preferred`` and must be offered for every OS version.
    """
    target = next_os or current_os
    candidates = [v for v in dict.fromkeys([target, current_os]) if supports_addons(v)]
    if not candidates:
        return None
    lead = candidates[0]
    if pin is not None:
        pinned = pinned_version(pin, runtime, {f"the manifest for OS {os}": offered.get(os, ()) for os in candidates})
        return Plan(version=pinned, os_versions=tuple(candidates))
    available = offered.get(lead, ())
    version = next((v for v in preferred if v in available), None)
    if version is None:
        raise NoRuntimeVersion(
            f"no {runtime} version for Kubernetes {kube_version}: the mappings from {mapping_source} "
            f"accept {', '.join(preferred) or 'none'}, the manifest for OS {lead} offers "
            f"{', '.join(available) or 'none'}"
        )
    chosen = tuple(os for os in candidates if os == lead or version in offered.get(os, ()))
    return Plan(version=version, os_versions=chosen)
