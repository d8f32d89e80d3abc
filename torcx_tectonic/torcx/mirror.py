"""The torcx backend's mirror: the signed manifests of the OS versions and
the addons nodes running them need for the Kubernetes minors::

    DIR/manifests/<board>/<OS version>/torcx_manifest.json      (--manifest-path)
    DIR/manifests/<board>/<OS version>/torcx_manifest.json.asc
    DIR/addons/<board>/<OS version>/<name>:<version>.torcx.tgz  (source.mirror_parts)

Nodes use it with ``[torcx] manifest_url`` pointing at the manifests and
``[torcx] addon_mirror`` at ``DIR/addons``: manifests are signed, so they are
never rewritten; a node finds each addon at its place in the mirror and
checks it against the signed manifest's sha512.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath

from packaging.version import Version

from .. import strategy
from ..cluster.mappings import RuntimeMappings
from ..config import Config, parse_addon_mirror, parse_manifest_url, require_manifest_url
from ..edges import source
from ..errors import InputError
from ..mirroring import (
    DEFAULT_MANIFEST_PATH,
    Artefact,
    Choice,
    Digest,
    Document,
    Plan,
    Report,
    Request,
    Summary,
    accepted,
    check_manifest_path,
    copy,
)
from .bucket import Bucket, FetchedManifest
from .manifest import manifest_url
from .store import addon_filename

ADDONS = source.ADDONS_DIR


def manifest_place(template: str, board: str, os_version: str) -> PurePosixPath:
    """Where the manifest of ``board``/``os_version`` lies below the mirror."""
    return PurePosixPath(manifest_url(check_manifest_path(template), board, os_version))


def addon_place(board: str, os_version: str, filename: str) -> PurePosixPath:
    return PurePosixPath(ADDONS, *source.mirror_parts(board, os_version, filename))



def choices(kubernetes: str, preferred: Sequence[str], mapping_source: str, os_versions: Sequence[str],
            offered: Mapping[str, Sequence[str]], runtime: str) -> tuple[list[Choice], list[str]]:
    """The versions a node chooses (strategy.choose) for ``kubernetes`` in
    every situation these OS versions make: running one of them with no
    update pending, or running one and booting a newer one next. Returns the
    choices and, for each OS that would be the next one and offers none of
    the preferred versions, the error a node would fail with."""
    found: list[Choice] = []
    problems: list[str] = []
    ordered = sorted(dict.fromkeys(os_versions), key=Version)
    for index, upcoming in enumerate(ordered):
        for current in ordered[: index + 1]:
            try:
                plan = strategy.choose(kube_version=kubernetes, preferred=preferred, mapping_source=mapping_source,
                                       current_os=current, next_os=None if current == upcoming else upcoming,
                                       offered=offered, runtime=runtime)
            except strategy.NoRuntimeVersion as err:
                if str(err) not in problems:
                    problems.append(str(err))
                continue
            if plan is not None:
                found.append(Choice(kubernetes, plan.version, plan.os_versions))
    return found, problems


def plan_torcx(manifests: Mapping[str, FetchedManifest], request: Request, mappings: RuntimeMappings,
               runtime: str) -> Plan:
    """The documents and addons a mirror needs, from verified manifests."""
    documents = tuple(
        Document(f"manifest for {request.board} {os_version}", fetched.url,
                 manifest_place(request.manifest_path, request.board, os_version), fetched.raw, fetched.signature)
        for os_version, fetched in manifests.items())
    offered = {os_version: fetched.packages.versions_of(runtime) for os_version, fetched in manifests.items()}
    all_choices: list[Choice] = []
    problems: list[str] = []
    for kubernetes, preferred in accepted(request, mappings, runtime, problems):
        found, failed = choices(kubernetes, preferred, mappings.source, request.os_versions, offered, runtime)
        all_choices += found
        problems += failed
    needed = dict.fromkeys((os_version, choice.version) for choice in all_choices for os_version in choice.os_versions)
    artefacts: list[Artefact] = []
    skipped: list[str] = []
    for os_version, version in needed:
        fetched = manifests[os_version]
        package = fetched.packages.package(runtime)
        listed = package.find(version) if package else None
        assert listed is not None  # chosen from what this manifest offers
        filename = addon_filename(runtime, version)
        what = f"{filename} for OS {os_version}"
        if listed.vendor_path() is not None:
            skipped.append(f"{what}: ships in the OS image ({listed.vendor_path()})")
            continue
        url = listed.url()
        if request.addon_source:
            url = source.mirrored_addon_url(request.addon_source, request.board, os_version, filename)
        if url is None:
            problems.append(f"{fetched.url}: {what} has no url and is not in the vendor store")
            continue
        artefacts.append(Artefact(what, url, addon_place(request.board, os_version, filename),
                                  Digest("sha512", listed.sha512)))
    return Plan(documents, tuple(artefacts), _merged(all_choices), tuple(skipped), tuple(problems))


def _merged(found: Iterable[Choice]) -> tuple[Choice, ...]:
    """One choice per Kubernetes minor and version, with every OS it goes to."""
    merged: dict[tuple[str, str], list[str]] = {}
    for choice in found:
        merged.setdefault((choice.kubernetes, choice.version), [])
        for os_version in choice.os_versions:
            if os_version not in merged[(choice.kubernetes, choice.version)]:
                merged[(choice.kubernetes, choice.version)].append(os_version)
    return tuple(Choice(k, v, tuple(sorted(oses, key=Version))) for (k, v), oses in merged.items())


def node_configuration(base: str, manifest_path: str = DEFAULT_MANIFEST_PATH) -> str:
    """The [torcx] lines that point a node at the mirror served at ``base``;
    a ValueError when they would not be valid configuration."""
    url = parse_manifest_url(f"{base}/{manifest_path}")
    addons = parse_addon_mirror(f"{base}/{ADDONS}")
    return f"[torcx]\nmanifest_url = {url}\naddon_mirror = {addons}\n"




def mirror(config: Config, request: Request, mappings: RuntimeMappings, report: Report) -> Summary:
    if not request.os_versions:
        raise InputError("mirror: expected at least one OS version (--os-version): manifests are per OS release")
    config = config.replacing(torcx=config.torcx.replacing(verify_signatures=True))
    runtime = config.torcx.addon
    with Bucket(config) as bucket:
        manifests: dict[str, FetchedManifest] = {}
        for os_version in dict.fromkeys(request.os_versions):
            if not strategy.supports_addons(os_version):
                report(f"  OS {os_version} is older than {strategy.ADDON_EPOCH}: it has no remote addons")
                continue
            manifests[os_version] = bucket.manifest(request.board, os_version)
            report(f"  verified    manifest for {request.board} {os_version} ({manifests[os_version].url})")
        plan = plan_torcx(manifests, request, mappings, runtime)
        summary = Summary(root=request.root, source=config.torcx.manifest_url, plan=plan,
                          mapping_source=mappings.source, manifest_path=request.manifest_path)
        request.root.mkdir(parents=True, exist_ok=True)
        copy(bucket, plan, summary, report)
    return summary




def with_source(config: Config, source: str | None, keyring: Path | None) -> Config:
    """The configuration with ``--from`` (the manifests' URL template) and ``--keyring`` applied."""
    return config.replacing(torcx=config.torcx.replacing(
        manifest_url=source or require_manifest_url(config.torcx), keyring=keyring or config.torcx.keyring))
