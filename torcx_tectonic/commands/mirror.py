"""``torcx-tectonic mirror``: a directory that nodes with no route out use as their bucket.

From a reachable bucket it copies the signed manifests of a list of OS
versions (with their ``.asc`` signatures, byte for byte) and the addons that
nodes running those OS versions need for a list of Kubernetes minors, into a
directory that any static web server serves or a removable disk carries::

    DIR/manifests/<board>/<OS version>/torcx_manifest.json      (--manifest-path)
    DIR/manifests/<board>/<OS version>/torcx_manifest.json.asc
    DIR/addons/<board>/<OS version>/<name>:<version>.torcx.tgz  (source.mirror_parts)

Nodes use it with ``[torcx] manifest_url`` pointing at the manifests and
``[torcx] addon_mirror`` at ``DIR/addons``: manifests are signed, so they are
never rewritten; a node finds each addon at its place in the mirror and
checks it against the signed manifest's sha512.

Everything copied is verified first: each manifest against its signature
and the keyring (always, whatever ``verify_signatures`` says), each addon
against the manifest's sha512 while it streams into a temporary file that
is renamed into place only when it matches. A file already in the mirror
with the right digest is kept (a second run downloads nothing), an addon
with the same bytes as one already in the mirror is hard-linked, and the
manifests are written after the addons they list.

What the copier handles is a list of artefacts (a URL, a path in the mirror,
a digest) and signed documents (a URL, a path, the bytes and their detached
signature): the torcx planner makes that list from the manifests and the
runtime mappings; a second kind (system extension images checked against a
signed SHA256SUMS) needs another planner, not another copier.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from packaging.version import Version

from .. import strategy
from ..cluster.mappings import RuntimeMappings, kube_minor
from ..config import Config, parse_addon_mirror, parse_image_url, parse_manifest_url
from ..edges import source
from ..edges.atomic import atomic_writer, placed, write_if_changed
from ..edges.inputfile import BOARD, OS_VERSION, decode_text
from ..errors import ConfigError, InputError, VerificationError, shown
from ..sysext import images as sysext
from ..torcx.bucket import Bucket, FetchedManifest
from ..torcx.manifest import manifest_url, read_chunks, stream_digest
from ..torcx.store import addon_filename, write_hashing

DEFAULT_MANIFEST_PATH = "manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
ADDONS = source.ADDONS_DIR
SIGNATURE_SUFFIX = ".asc"
#: Where a mirror keeps system extension images and their checksum list.
SYSEXT_DIR = "sysext"
SUMS_NAME = "SHA256SUMS"

Report = Callable[[str], None]


# --- what a mirror carries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """What a copied file must hash to: a hashlib algorithm and the hex digest."""

    algorithm: str
    hex: str


@dataclass(frozen=True)
class Artefact:
    """A file the mirror carries, checked by its digest (an addon; later a
    system extension image)."""

    what: str
    url: str
    path: PurePosixPath
    digest: Digest


@dataclass(frozen=True)
class Document:
    """A signed document the mirror carries as it is, with its detached
    signature beside it (already verified when it is planned)."""

    what: str
    url: str
    path: PurePosixPath
    raw: bytes
    signature: bytes


@dataclass(frozen=True)
class Choice:
    """The runtime version nodes choose for a Kubernetes minor, and what
    carries it: an addon in the store of each of ``os_versions`` (torcx),
    or one system extension ``image`` that serves every OS version."""

    kubernetes: str
    version: str
    os_versions: tuple[str, ...]
    image: str = ""


@dataclass(frozen=True)
class Plan:
    documents: tuple[Document, ...]
    artefacts: tuple[Artefact, ...]
    choices: tuple[Choice, ...] = ()
    #: what is not copied, and why (an addon the OS image carries)
    skipped: tuple[str, ...] = ()
    #: what nodes would need but the bucket cannot give: the mirror is incomplete
    problems: tuple[str, ...] = ()
    #: what the documents and the artefacts are, for the summary
    names: tuple[str, str] = ("manifests", "addons")
    #: the configuration that points a node at the mirror served at a base URL
    node_lines: Callable[[str], str] | None = None


@dataclass
class Summary:
    root: Path
    source: str
    plan: Plan
    mapping_source: str = ""
    manifest_path: str = DEFAULT_MANIFEST_PATH
    #: per document: written or unchanged
    documents: dict[str, str] = field(default_factory=dict)
    #: per artefact: (downloaded, linked or present; bytes downloaded)
    artefacts: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.plan.problems


# --- the request ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What to mirror and where: checked before anything is fetched."""

    root: Path
    board: str
    os_versions: tuple[str, ...]
    kubernetes: tuple[str, ...]
    manifest_path: str = DEFAULT_MANIFEST_PATH
    #: the base URL of a mirror to take the addons from instead of the manifests' URLs
    addon_source: str = ""

    def __post_init__(self) -> None:
        BOARD.check(self.board, "board", "mirror")
        for version in self.os_versions:
            OS_VERSION.check(version, "OS version", "mirror")
        for version in self.kubernetes:
            kube_minor(version)
        check_manifest_path(self.manifest_path)
        if not self.kubernetes:
            raise InputError("mirror: expected at least one Kubernetes version")


def check_manifest_path(template: str) -> str:
    """A manifest path below the mirror: relative, {{.OSVersion}} in it, and
    the same characters a file:// URL of it may hold."""
    filled = template.replace("{{.Board}}", "amd64-usr").replace("{{.OSVersion}}", "1632.3.0")
    if template.startswith("/"):
        problem: str | None = "it is absolute"
    elif "{{.OSVersion}}" not in template:
        problem = "it has no {{.OSVersion}}"
    else:
        problem = source.file_url_problem("file:///" + filled)
    if problem is not None:
        raise InputError(f"mirror: manifest path {shown(template)} is not allowed: {problem}; expected a relative "
                         f"path with {{{{.OSVersion}}}} (and {{{{.Board}}}}) such as {DEFAULT_MANIFEST_PATH}")
    return template


def manifest_place(template: str, board: str, os_version: str) -> PurePosixPath:
    """Where the manifest of ``board``/``os_version`` lies below the mirror."""
    return PurePosixPath(manifest_url(check_manifest_path(template), board, os_version))


def addon_place(board: str, os_version: str, filename: str) -> PurePosixPath:
    return PurePosixPath(ADDONS, *source.mirror_parts(board, os_version, filename))


# --- planning: what nodes of these OS versions and Kubernetes minors need ----------------------------------------


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


def _accepted(request: Request, mappings: RuntimeMappings, runtime: str,
              problems: list[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each requested Kubernetes version with the runtime versions the
    mappings accept for it, best first; a version the mappings have nothing
    for becomes a problem (the others are still mirrored)."""
    for kubernetes in request.kubernetes:
        try:
            yield kubernetes, mappings.versions_for(kubernetes, runtime)
        except InputError as err:
            problems.append(str(err))


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
    for kubernetes, preferred in _accepted(request, mappings, runtime, problems):
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


def plan_sysext(raw: bytes, signature: bytes, sums_url: str, images_url: str, request: Request,
                mappings: RuntimeMappings, runtime: str) -> Plan:
    """The checksum list and the runtime images a sysext mirror needs: for
    each Kubernetes minor, the first accepted version the list has an image of
    for the board's architecture."""
    arch = sysext.arch_of(request.board)
    sums = sysext.parse_sums(decode_text(raw, sums_url, "a SHA256SUMS list"), sums_url)
    available = sysext.offered(sums, runtime, arch)
    document = Document(f"checksum list of the {runtime} images", sums_url, PurePosixPath(SYSEXT_DIR, SUMS_NAME),
                        raw, signature)
    found: list[Choice] = []
    problems: list[str] = []
    artefacts: dict[str, Artefact] = {}
    for kubernetes, preferred in _accepted(request, mappings, runtime, problems):
        version = next((v for v in preferred if v in available), None)
        if version is None:
            problems.append(f"no {runtime} version for Kubernetes {kubernetes}: the mappings from {mappings.source} "
                            f"accept {', '.join(preferred)}, {sums_url} offers {', '.join(available) or 'none'}")
            continue
        name = sysext.image_name(runtime, version, arch)
        found.append(Choice(kubernetes, version, (), image=name))
        artefacts[name] = Artefact(name, sysext.fill(images_url, runtime, version, arch),
                                   PurePosixPath(SYSEXT_DIR, name), Digest("sha256", sums[name]))

    def node_lines(base: str) -> str:
        template = parse_image_url(f"{base}/{SYSEXT_DIR}/{{{{.Name}}}}-{{{{.Version}}}}-{{{{.Arch}}}}.raw")
        return f"[runtime]\nbackend = sysext\n[sysext]\nimages_url = {template}\n"

    return Plan((document,), tuple(artefacts.values()), tuple(found), (), tuple(problems),
                names=("checksum lists", "images"), node_lines=node_lines)


def _merged(found: Iterable[Choice]) -> tuple[Choice, ...]:
    """One choice per Kubernetes minor and version, with every OS it goes to."""
    merged: dict[tuple[str, str], list[str]] = {}
    for choice in found:
        merged.setdefault((choice.kubernetes, choice.version), [])
        for os_version in choice.os_versions:
            if os_version not in merged[(choice.kubernetes, choice.version)]:
                merged[(choice.kubernetes, choice.version)].append(os_version)
    return tuple(Choice(k, v, tuple(sorted(oses, key=Version))) for (k, v), oses in merged.items())


# --- copying: verified, atomic, idempotent -----------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str | None:
    """The digest of the regular file at ``path`` (not through a link), or
    None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return stream_digest(read_chunks(handle), algorithm)


def copy_verified(chunks: Iterable[bytes], target: Path, digest: Digest, origin: str) -> int:
    """Stream ``chunks`` into ``target``; it appears only when they hash to
    ``digest``. Returns the size."""
    with atomic_writer(target, 0o644) as handle:
        actual = write_hashing(handle, chunks, digest.algorithm)
        if actual != digest.hex:
            raise VerificationError(
                f"{origin}: {digest.algorithm} mismatch for {target.name}: expected {digest.hex[:16]}…, the "
                f"download has {actual[:16]}…; nothing was written")
        return handle.tell()


def link_verified(source_path: Path, target: Path, digest: Digest) -> str:
    """Put a file this run verified at ``target`` too: a hard link made
    atomically, or a verified copy across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with placed(target) as tmp:
            os.link(source_path, tmp)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        with source_path.open("rb") as handle:
            copy_verified(read_chunks(handle), target, digest, str(source_path))
        return "copied"
    return "linked"


def copy(bucket: Bucket, plan: Plan, summary: Summary, report: Report) -> None:
    """Copy the plan into ``summary.root``: the artefacts, then the documents
    that list them."""
    root = summary.root
    verified: dict[Digest, Path] = {}
    for artefact in plan.artefacts:
        target = root / artefact.path
        if file_digest(target, artefact.digest.algorithm) == artefact.digest.hex:
            summary.artefacts[artefact.what] = ("present", 0)
            report(f"  present     {artefact.path}")
        elif artefact.digest in verified:
            how = link_verified(verified[artefact.digest], target, artefact.digest)
            summary.artefacts[artefact.what] = (how, 0)
            report(f"  {how:11} {artefact.path} (the same bytes as {verified[artefact.digest].relative_to(root)})")
        else:
            report(f"  fetching    {artefact.path} from {artefact.url}")
            size = copy_verified(bucket.download(artefact.url, artefact.what), target, artefact.digest, artefact.url)
            summary.artefacts[artefact.what] = ("downloaded", size)
            report(f"  downloaded  {artefact.path} ({size} bytes, {artefact.digest.algorithm} verified)")
        verified.setdefault(artefact.digest, target)
    for document in plan.documents:
        target = root / document.path
        changed = write_if_changed(target, document.raw)
        changed = write_if_changed(target.parent / (target.name + SIGNATURE_SUFFIX), document.signature) or changed
        state = "written" if changed else "unchanged"
        summary.documents[document.what] = state
        report(f"  {state:11} {document.path} (and {SIGNATURE_SUFFIX}: signature verified)")


def run(config: Config, request: Request, mappings: RuntimeMappings, report: Report) -> Summary:
    """Verify and fetch what the request needs from the bucket of
    ``config`` ([torcx] manifest_url, or the sysext images) and copy it into
    the mirror. Signatures are always checked here, whatever the node's
    configuration says: a mirror is what air-gapped nodes trust."""
    if config.runtime.backend == "sysext":
        return _run_sysext(config, request, mappings, report)
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


def _run_sysext(config: Config, request: Request, mappings: RuntimeMappings, report: Report) -> Summary:
    sx = config.sysext
    if not sx.images_url:
        raise ConfigError("[sysext] images_url is not set: the mirror copies the images from there (or --from)")
    with Bucket(config) as bucket:
        raw, signature = bucket.signed_document(sx.sums_url, f"checksum list of the {sx.runtime} images", verify=True,
                                                keyring=sx.keyring)
        report(f"  verified    {sx.sums_url}")
        plan = plan_sysext(raw, signature, sx.sums_url, sx.images_url, request, mappings, sx.runtime)
        summary = Summary(root=request.root, source=sx.images_url, plan=plan, mapping_source=mappings.source)
        request.root.mkdir(parents=True, exist_ok=True)
        copy(bucket, plan, summary, report)
    return summary


# --- what the operator reads --------------------------------------------------------------------------------------


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


def node_configuration(base: str, manifest_path: str = DEFAULT_MANIFEST_PATH) -> str:
    """The [torcx] lines that point a node at the mirror served at ``base``;
    a ValueError when they would not be valid configuration."""
    url = parse_manifest_url(f"{base}/{manifest_path}")
    addons = parse_addon_mirror(f"{base}/{ADDONS}")
    return f"[torcx]\nmanifest_url = {url}\naddon_mirror = {addons}\n"


def render(summary: Summary, base: str | None, note: str) -> str:
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
        lines = plan.node_lines(base) if plan.node_lines else node_configuration(base, summary.manifest_path)
        out += [f"Nodes that see this directory at {base} use it with:", "", lines.rstrip("\n")]
    if note:
        out.append(note)
    return "\n".join(out) + "\n"
