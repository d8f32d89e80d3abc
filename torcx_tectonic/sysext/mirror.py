"""The sysext backend's mirror: the signed checksum list and, for each
Kubernetes minor, the runtime image nodes choose::

    DIR/sysext/SHA256SUMS, DIR/sysext/SHA256SUMS.asc
    DIR/sysext/<runtime>-<version>-<arch>.raw

Nodes use it with ``[sysext] images_url`` pointing at the images.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..cluster.mappings import RuntimeMappings
from ..config import Config, parse_image_url
from ..edges.inputfile import decode_text
from ..errors import ConfigError
from ..mirroring import Artefact, Choice, Digest, Document, Plan, Report, Request, Summary, accepted, copy
from ..torcx.bucket import Bucket
from . import images as sysext

#: Where a mirror keeps system extension images and their checksum list.
SYSEXT_DIR = "sysext"
SUMS_NAME = "SHA256SUMS"


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
    for kubernetes, preferred in accepted(request, mappings, runtime, problems):
        version = next((v for v in preferred if v in available), None)
        if version is None:
            problems.append(f"no {runtime} version for Kubernetes {kubernetes}: the mappings from {mappings.source} "
                            f"accept {', '.join(preferred)}, {sums_url} offers {', '.join(available) or 'none'}")
            continue
        name = sysext.image_name(runtime, version, arch)
        found.append(Choice(kubernetes, version, (), image=name))
        artefacts[name] = Artefact(name, sysext.fill(images_url, runtime, version, arch),
                                   PurePosixPath(SYSEXT_DIR, name), Digest("sha256", sums[name]))

    return Plan((document,), tuple(artefacts.values()), tuple(found), (), tuple(problems),
                names=("checksum lists", "images"))


def node_configuration(base: str, manifest_path: str = "") -> str:
    """The lines that point a node at the mirror served at ``base`` (the
    images need no manifest path); a ValueError when they would not be
    valid configuration."""
    template = parse_image_url(f"{base}/{SYSEXT_DIR}/{{{{.Name}}}}-{{{{.Version}}}}-{{{{.Arch}}}}.raw")
    return f"[runtime]\nbackend = sysext\n[sysext]\nimages_url = {template}\n"


def with_source(config: Config, source: str | None, keyring: Path | None) -> Config:
    """The configuration with ``--from`` (the images' URL template) and ``--keyring`` applied."""
    return config.replacing(sysext=config.sysext.replacing(images_url=source or config.sysext.images_url,
                                                           keyring=keyring or config.sysext.keyring))



def mirror(config: Config, request: Request, mappings: RuntimeMappings, report: Report) -> Summary:
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


