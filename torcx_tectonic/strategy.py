"""Version choice (docs/design.md, 'Version choice') as pure functions of plain data.

Take the Kubernetes version's preferred runtime versions, pick the first one
that the manifest of the OS that runs next offers, install it there, and also
for the other OS when its manifest has the same version. OS versions older
than the remote-addon epoch are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


def choose(
    *,
    kube_version: str,
    preferred: Sequence[str],
    mapping_source: str,
    current_os: str,
    next_os: str | None,
    offered: Mapping[str, Sequence[str]],
    runtime: str = "docker",
) -> Plan | None:
    """Decide the runtime version and the OS versions to install it for.

    ``offered`` maps each OS version whose manifest was read to the runtime
    versions it lists. Returns None when no OS involved supports addons.
    """
    target = next_os or current_os
    candidates = [v for v in dict.fromkeys([target, current_os]) if supports_addons(v)]
    if not candidates:
        return None
    lead = candidates[0]
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
