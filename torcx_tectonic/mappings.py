"""Runtime mappings: which Docker versions a Kubernetes minor accepts.

The document (``kind: VersionManifestV1``) comes from the cluster's ConfigMap
or the installer's local copy; lookups go by ``major.minor`` of the cluster
version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InputError
from .yamldoc import load_mapping

MAPPINGS_KIND = "VersionManifestV1"
_KUBE_VERSION = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)(?:\.(?P<patch>\d+))?"
    r"(?P<rest>[-+_.][0-9A-Za-z.+_-]*)?$"
)
_MINOR_KEY = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)$")


@dataclass(frozen=True)
class RuntimeMappings:
    """Preferred runtime versions per Kubernetes ``major.minor``, best first."""

    by_minor: dict[str, tuple[str, ...]]
    source: str

    def versions_for(self, kube_version: str, runtime: str = "docker") -> tuple[str, ...]:
        """The accepted versions for a cluster version, best first."""
        minor = kube_minor(kube_version)
        versions = self.by_minor.get(minor)
        if not versions:
            known = ", ".join(sorted(self.by_minor)) or "none"
            raise InputError(
                f"Kubernetes {kube_version} (minor {minor}) has no {runtime} versions in the "
                f"runtime mappings from {self.source}; mapped minors: {known}"
            )
        return versions


def kube_minor(version: str) -> str:
    """``major.minor`` of a Kubernetes version like ``v1.8.4+coreos.0``."""
    match = _KUBE_VERSION.match(version.strip())
    if not match:
        raise InputError(f"{version!r} is not a Kubernetes version like v1.8.4+coreos.0")
    return f"{match['major']}.{match['minor']}"


def parse_mappings(text: str, source: str, runtime: str = "docker") -> RuntimeMappings:
    """Parse a VersionManifestV1 document for one runtime."""
    document = load_mapping(text, source, f"a mapping with kind: {MAPPINGS_KIND}")
    kind = document.get("kind")
    if kind != MAPPINGS_KIND:
        raise InputError(f"{source}: kind is {kind!r}; expected {MAPPINGS_KIND!r}")
    k8s = (document.get("versions") or {}).get("k8s") if isinstance(document.get("versions"), dict) else None
    if not isinstance(k8s, dict):
        raise InputError(f"{source}: expected versions.k8s to map \"major.minor\" to runtime lists")
    by_minor: dict[str, tuple[str, ...]] = {}
    for minor, entry in k8s.items():
        key = str(minor)
        if isinstance(minor, float):
            raise InputError(
                f"{source}: versions.k8s key {minor!r} is an unquoted number; quote it (\"{key}\") "
                "so that 1.10 is not read as 1.1"
            )
        if not _MINOR_KEY.fullmatch(key):
            raise InputError(f"{source}: versions.k8s key {key!r} is not a \"major.minor\" version like \"1.8\"")
        if not isinstance(entry, dict) or runtime not in entry:
            continue
        versions = entry[runtime]
        if not isinstance(versions, list) or not all(isinstance(v, str) and v for v in versions):
            raise InputError(
                f"{source}: versions.k8s.{key}.{runtime} must be a list of version strings, got {versions!r}"
            )
        by_minor[key] = tuple(versions)
    return RuntimeMappings(by_minor=by_minor, source=source)
