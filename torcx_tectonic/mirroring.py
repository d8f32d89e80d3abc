"""What a mirror carries and how it is copied, whichever backend plans it.

A mirror is a directory that nodes with no route out use as their bucket.
Each backend plans what its nodes need (torcx: the signed manifests and the
addons they list; sysext: the signed checksum list and the images) as
signed documents (copied byte for byte with their detached signatures,
already verified) and artefacts (a URL, a place in the mirror, a digest);
one copier fetches them. Everything copied is verified first: each artefact
streams into a temporary file that is renamed into place only when its
digest matches. A file already in the mirror with the right digest is kept
(a second run downloads nothing), an artefact with the same bytes as one
already copied is hard-linked, and the documents are written after the
artefacts they list.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .cluster.mappings import RuntimeMappings, kube_minor
from .edges import source
from .edges.atomic import atomic_writer, placed, write_if_changed
from .edges.inputfile import BOARD, OS_VERSION
from .errors import InputError, VerificationError, shown
from .torcx.bucket import Bucket
from .torcx.manifest import read_chunks, stream_digest
from .torcx.store import write_hashing

DEFAULT_MANIFEST_PATH = "manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
SIGNATURE_SUFFIX = ".asc"

Report = Callable[[str], None]


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



def accepted(request: Request, mappings: RuntimeMappings, runtime: str,
              problems: list[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each requested Kubernetes version with the runtime versions the
    mappings accept for it, best first; a version the mappings have nothing
    for becomes a problem (the others are still mirrored)."""
    for kubernetes in request.kubernetes:
        try:
            yield kubernetes, mappings.versions_for(kubernetes, runtime)
        except InputError as err:
            problems.append(str(err))


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


