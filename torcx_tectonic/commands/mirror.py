"""``torcx-tectonic mirror``: a directory that nodes with no route out use
as their bucket. The backend plans what its nodes need (torcx/mirror.py,
sysext/mirror.py), mirroring.py copies it, and this says what was done and
how nodes use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..cluster.mappings import RuntimeMappings, kube_minor
from ..config import Config, parse_image_url, parse_manifest_url
from ..edges import source
from ..flows import runtime_backend
from ..mirroring import Report, Request, Summary
from ..sysext import mirror as sysext_mirror
from ..torcx import mirror as torcx_mirror


@dataclass(frozen=True)
class Mirroring:
    """What the mirror command asks of a backend."""

    #: ``--from``'s grammar: the bucket's URL template
    parse_source: Callable[[str], str]
    #: the configuration with ``--from`` and ``--keyring`` applied
    with_source: Callable[[Config, str | None, Path | None], Config]
    #: the lines that point a node at the mirror served at a base URL (base, manifest path)
    node_configuration: Callable[[str, str], str]
    #: verify, fetch and copy what nodes need; signatures are always checked
    #: here, whatever the node's configuration says: a mirror is what
    #: air-gapped nodes trust
    run: Callable[[Config, Request, RuntimeMappings, Report], Summary]


MIRRORING = {
    "torcx": Mirroring(parse_manifest_url, torcx_mirror.with_source, torcx_mirror.node_configuration,
                       torcx_mirror.mirror),
    "sysext": Mirroring(parse_image_url, sysext_mirror.with_source, sysext_mirror.node_configuration,
                        sysext_mirror.mirror),
}


def mirroring(config: Config) -> Mirroring:
    return MIRRORING[runtime_backend(config).name]


def run(config: Config, request: Request, mappings: RuntimeMappings, report: Report) -> Summary:
    """What the configured backend's nodes need, verified and copied into the mirror."""
    return mirroring(config).run(config, request, mappings, report)


def served_at(root: Path, given: str | None) -> tuple[str | None, str]:
    """The base URL nodes reach the mirror at, and a note when it is not
    known: the directory as a file:// URL unless the units could not read it
    there."""
    if given:
        return given.rstrip("/"), ""
    url = f"file://{root}"
    hidden = source.hidden_from_units(root)
    if source.file_url_problem(url) is not None or hidden is not None:
        why = f"the units cannot see {hidden}" if hidden else "its path is not one a file:// URL may name"
        return None, (f"Nodes cannot use {root} where it is ({why}): put the directory under "
                      f"{source.MIRROR_PLACES} on them (or serve it over https) and run again with "
                      "--served-at file:///srv/mirror (or the URL) to see their configuration")
    return url, ""


def render(summary: Summary, base: str | None, note: str, node_lines: Callable[[str, str], str]) -> str:
    """The summary, and the lines that point nodes at the mirror when it is served at ``base``."""
    plan = summary.plan
    counts: dict[str, int] = {}
    for action, _ in summary.artefacts.values():
        counts[action] = counts.get(action, 0) + 1
    downloaded = sum(size for _, size in summary.artefacts.values())
    written = sum(1 for state in summary.documents.values() if state == "written")
    documents, artefacts = plan.names
    out = [f"mirror {summary.root} from {summary.source}: {'complete' if summary.complete else 'INCOMPLETE'}",
           f"  {documents + ':':11} {len(summary.documents)} verified and copied with their signatures ({written} "
           f"written, {len(summary.documents) - written} unchanged)",
           f"  {artefacts + ':':11} {len(summary.artefacts)} verified ({counts.get('downloaded', 0)} downloaded, "
           f"{downloaded} bytes; {counts.get('linked', 0) + counts.get('copied', 0)} linked; "
           f"{counts.get('present', 0)} already there)"]
    for choice in plan.choices:
        carrier = f"({choice.image})" if choice.image else f"for OS {', '.join(choice.os_versions)}"
        out.append(f"  Kubernetes {kube_minor(choice.kubernetes)}: {choice.version} {carrier}")
    if summary.mapping_source:
        out.append(f"  (runtime mappings from {summary.mapping_source})")
    out += [f"  not copied: {line}" for line in plan.skipped]
    out += [f"  PROBLEM: {line}" for line in plan.problems]
    out.append("")
    if base is not None:
        lines = node_lines(base, summary.manifest_path)
        out += [f"Nodes that see this directory at {base} use it with:", "", lines.rstrip("\n")]
    if note:
        out.append(note)
    return "\n".join(out) + "\n"
