"""Runtime mappings: which Docker versions a Kubernetes minor accepts.

The document (``kind: VersionManifestV1``) comes from the cluster's ConfigMap
or the installer's local copy; lookups go by ``major.minor`` of the cluster
version. Installers write keys and versions unquoted (``1.10:``,
``docker: [17.03, 1.12]``); they are read as the text they are written as,
as the original tool's YAML library did, so ``1.10`` stays ``1.10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..edges.inputfile import KUBE_VERSION, NAME, grammar, read_text_if_exists
from ..errors import InputError, shown

MAPPINGS_KIND = "VersionManifestV1"
#: Where the cluster keeps them: a ConfigMap, and its key.
MAPPINGS_NAMESPACE = "tectonic-system"
MAPPINGS_CONFIGMAP = "tectonic-torcx-runtime-mappings"
MAPPINGS_KEY = "runtime-mappings.yaml"
_MINOR_KEY = grammar('a "major.minor" version like 1.8', r"(?:0|[1-9][0-9]{0,8})\.(?:0|[1-9][0-9]{0,8})", 19)


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
    """``major.minor`` of a Kubernetes version like ``v1.8.4+coreos.0``.

    The string is checked as it is, not a stripped copy: it is the one that
    is used afterwards (in kubelet.env, for one), so ``"v1.8.4\\n"`` is refused.
    """
    match = KUBE_VERSION.pattern.fullmatch(KUBE_VERSION.check(version, "version", "Kubernetes"))
    assert match is not None  # checked
    return f"{match['major']}.{match['minor']}"


def parse_mappings(text: str, source: str, runtime: str = "docker") -> RuntimeMappings:
    """Parse a VersionManifestV1 document for one runtime.

    A minor without an entry for ``runtime`` (e.g. only podman) is not
    mapped; an entry of the wrong shape is an error, never dropped.
    """
    from ..edges.yamldoc import LiteralLoader, load_mapping  # PyYAML: only where a document is read

    document = load_mapping(text, source, f"a mapping with kind: {MAPPINGS_KIND}", LiteralLoader)
    kind = document.get("kind")
    if kind != MAPPINGS_KIND:
        raise InputError(f"{source}: kind is {shown(kind)}; expected {MAPPINGS_KIND!r}")
    versions = document.get("versions")
    k8s = versions.get("k8s") if isinstance(versions, dict) else None
    if not isinstance(k8s, dict):
        raise InputError(f"{source}: expected versions.k8s to map \"major.minor\" to runtime lists")
    by_minor: dict[str, tuple[str, ...]] = {}
    for minor, entry in k8s.items():
        key = _MINOR_KEY.check(minor, "versions.k8s key", source)
        where = f"versions.k8s.{key}"
        if not isinstance(entry, dict):
            raise InputError(f"{source}: {where} is {shown(entry)}; expected a mapping of runtime names to lists")
        if runtime not in entry:
            continue
        listed = entry[runtime]
        if not isinstance(listed, list):
            raise InputError(f"{source}: {where}.{runtime} is {shown(listed)}; expected a list of versions")
        by_minor[key] = tuple(NAME.check(v, f"{where}.{runtime} entry", source) for v in listed)
    return RuntimeMappings(by_minor=by_minor, source=source)


def load_mappings(path: Path, runtime: str = "docker") -> RuntimeMappings | None:
    """The node-local runtime mappings, or None when there are none."""
    text = read_text_if_exists(path, f"runtime mappings (kind: {MAPPINGS_KIND})")
    return None if text is None else parse_mappings(text, str(path), runtime)
