"""systemd system extensions: the container runtime image a Flatcar node merges.

Flatcar replaced torcx with system extensions (from 3794.0.0): Docker and
containerd are images that ``systemd-sysext`` merges over ``/usr``. What
matters here (systemd-sysext(8), Flatcar, the sysext-bakery):

- an image is ``NAME.raw`` (or a directory ``NAME/``) in ``/etc/extensions``
  (also ``/run/extensions``, ``/var/lib/extensions``); it carries
  ``usr/lib/extension-release.d/extension-release.NAME``;
- it is merged only if its ``ID`` is the host's (or ``_any``), then, when
  both the image and the host set ``SYSEXT_LEVEL``, if those are equal, else
  if its ``VERSION_ID`` is the host's; and if its ``ARCHITECTURE``, when set
  and not ``_any``, is the host's;
- Flatcar ships ``docker-flatcar.raw``/``containerd-flatcar.raw`` in
  ``/usr/share/flatcar/sysext/`` linked from ``/etc/extensions/``; an operator
  replaces them by masking those links (to ``/dev/null``) and linking
  ``/etc/extensions/docker.raw`` to an image kept in ``/opt/extensions/docker/``
  (the bakery's layout, and what ``systemd-sysupdate``'s ``CurrentSymlink=``
  makes);
- the bakery names images ``<name>-<version>-<arch>.raw`` (arch ``x86-64``,
  ``arm64``) and publishes a ``SHA256SUMS`` per release.

The decisions (does an image fit an OS, which versions a checksum list
offers, which images GC removes) are pure functions; the edges read an
image's extension-release with ``systemd-dissect`` and switch links
atomically.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..edges.atomic import atomic_writer, make_dirs, placed
from ..edges.envfile import parse_env
from ..edges.inputfile import NAME, read_text
from ..errors import InputError, VerificationError, shown
from ..state import VerifiedCache
from ..torcx.store import write_hashing

log = logging.getLogger(__name__)

RUNTIMES = ("docker", "containerd")
#: The kubelet's image, as the bakery names it (kubernetes-v1.30.4-x86-64.raw).
KUBERNETES = "kubernetes"
#: systemd's architecture names, by Container Linux/Flatcar board.
ARCH_BY_BOARD = {"amd64-usr": "x86-64", "arm64-usr": "arm64"}
#: The images Flatcar ships, linked from /etc/extensions/<runtime>-flatcar.raw.
BUILTIN_SUFFIX = "-flatcar"
#: When a newly linked image is merged: at once (``activate = refresh``) or at the next boot.
MERGED_NOW, MERGED_AT_NEXT_BOOT = "now", "at the next boot"
RELEASE_DIR = "usr/lib/extension-release.d"
ANY = "_any"
DISSECT = "systemd-dissect"
DISSECT_TIMEOUT_SECS = 120
_SUM_LINE = re.compile(r"^(?P<hex>[0-9a-f]{64}) [ *](?P<name>[^\s/]+)$")
MAX_SUMS_LINES = 100_000


@dataclass(frozen=True)
class Release:
    """What systemd-sysext compares: of the host's os-release or an image's
    extension-release (``origin`` says which file)."""

    id: str | None
    version_id: str | None
    sysext_level: str | None
    architecture: str | None
    origin: str


def release_from_text(text: str, origin: str) -> Release:
    values = parse_env(text, origin)
    return Release(id=values.get("ID") or None, version_id=values.get("VERSION_ID") or None,
                   sysext_level=values.get("SYSEXT_LEVEL") or None,
                   architecture=values.get("ARCHITECTURE") or None, origin=origin)


def misfit(image: Release, host: Release, host_arch: str) -> str | None:
    """Why systemd-sysext would not merge ``image`` on ``host`` (None: it
    would), naming the field and both values."""
    if image.id is None:
        return f"{image.origin} has no ID"
    if image.id not in (ANY, host.id):
        return f"{image.origin} has ID={image.id}, {host.origin} ID={host.id}"
    if image.architecture not in (None, ANY, host_arch):
        return f"{image.origin} has ARCHITECTURE={image.architecture}, the node is {host_arch}"
    if image.sysext_level is not None and host.sysext_level is not None:
        if image.sysext_level != host.sysext_level:
            return (f"{image.origin} has SYSEXT_LEVEL={image.sysext_level}, "
                    f"{host.origin} SYSEXT_LEVEL={host.sysext_level}")
        return None
    if host.version_id is not None:
        if image.version_id is None:
            return f"{image.origin} has neither SYSEXT_LEVEL nor VERSION_ID (the host has VERSION_ID={host.version_id})"
        if image.version_id != host.version_id:
            return f"{image.origin} has VERSION_ID={image.version_id}, {host.origin} VERSION_ID={host.version_id}"
    return None


def next_release(current: Release, next_version: str) -> Release:
    """The next OS as the node can know it without mounting the other /usr:
    the running OS's ID and SYSEXT_LEVEL, the version update_engine reports
    (Flatcar keeps SYSEXT_LEVEL across releases; an image pinned to a
    VERSION_ID is then checked against the new version)."""
    return Release(id=current.id, version_id=next_version, sysext_level=current.sysext_level, architecture=None,
                   origin=f"OS {next_version} (its ID and SYSEXT_LEVEL taken from the running OS)")


def arch_of(board: str) -> str:
    try:
        return ARCH_BY_BOARD[board]
    except KeyError:
        raise InputError(f"board {board!r} has no known systemd architecture; known: "
                         f"{', '.join(sorted(ARCH_BY_BOARD))}") from None


def image_name(runtime: str, version: str, arch: str) -> str:
    """``<runtime>-<version>-<arch>.raw``, as the bakery names images."""
    NAME.check(runtime, "runtime", "image name")
    NAME.check(version, f"{runtime} version", "image name")
    return f"{runtime}-{version}-{arch}.raw"


def parse_sums(text: str, source: str) -> dict[str, str]:
    """A SHA256SUMS list: image file name → sha256. A name listed twice with
    different sums, or a line that is not ``<64 hex> <name>``, is an error."""
    sums: dict[str, str] = {}
    lines = text.splitlines()
    if len(lines) > MAX_SUMS_LINES:
        raise InputError(f"{source}: more than {MAX_SUMS_LINES} lines; expected a SHA256SUMS list")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _SUM_LINE.match(line)
        if not match:
            raise InputError(f"{source}:{number}: {shown(line)} is not '<sha256 in hex>  <file name>'")
        name, digest = match["name"], match["hex"]
        if sums.get(name, digest) != digest:
            raise InputError(f"{source}:{number}: {name} is listed again with another sum")
        sums[name] = digest
    return sums


def offered(sums: Mapping[str, str], runtime: str, arch: str) -> tuple[str, ...]:
    """The runtime versions a checksum list has an image of for ``arch``."""
    return tuple(version for name in sums if (version := version_of(name, runtime, arch)))


def fill(template: str, runtime: str, version: str, arch: str) -> str:
    """An image URL from its template ({{.Name}}, {{.Version}}, {{.Arch}})."""
    return template.replace("{{.Name}}", runtime).replace("{{.Version}}", version).replace("{{.Arch}}", arch)


def select_gc(images: Sequence[str], keep: Sequence[str], limit: int) -> list[str]:
    """Images to remove: all but the ones in ``keep`` (in use, just installed)
    and the newest others up to ``limit`` in all (by name order of
    appearance: ``images`` is newest first)."""
    kept = list(dict.fromkeys(keep))
    for name in images:
        if len(kept) >= limit:
            break
        if name not in kept:
            kept.append(name)
    return [name for name in images if name not in kept]


# --- the edges -----------------------------------------------------------------------------------

def verified_cache(cache_dir: Path) -> VerifiedCache:
    """Where the verified checksum list and the extension-releases of stored
    images are kept (``SHA256SUMS``, ``<image>.release``)."""
    return VerifiedCache(cache_dir, "sysext")


def read_release(image: Path, name: str) -> Release:
    """The extension-release inside an image, read with systemd-dissect
    (a loop device, mounted read-only in a private namespace)."""
    inside = f"/{RELEASE_DIR}/extension-release.{name}"
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-sysext.") as tmp:
        out = Path(tmp) / "extension-release"
        try:
            result = subprocess.run([DISSECT, "--copy-from", str(image), inside, str(out)], capture_output=True,
                                    text=True, timeout=DISSECT_TIMEOUT_SECS, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise InputError(f"{image}: cannot read its extension-release with {DISSECT}: {err}") from None
        if result.returncode != 0:
            detail = " ".join(result.stderr.split())[:300]
            raise InputError(f"{image}: no {inside} in the image, or not an image {DISSECT} can open: {detail}")
        return release_from_text(read_text(out, "an extension-release file"), f"{image.name}:{inside}")


def store_image(directory: Path, name: str, sha256: str, chunks: Iterable[bytes], origin: str) -> Path:
    """Stream an image into ``directory``; it appears only when its sha256 matched."""
    target = directory / name
    with atomic_writer(target, 0o644) as handle:
        actual = write_hashing(handle, chunks, "sha256")
        if actual != sha256:
            raise VerificationError(f"{origin}: sha256 mismatch for {name}: the checksum list says {sha256[:16]}…, "
                                    f"the download has {actual[:16]}…; nothing was stored")
    return target


def link(path: Path, target: str) -> bool:
    """Point the symlink ``path`` at ``target`` atomically (a new link renamed
    over the old one, so systemd-sysext sees the old image or the new one);
    returns whether it changed."""
    try:
        if os.readlink(path) == target:
            return False
    except FileNotFoundError:
        pass
    except OSError as err:
        if not path.exists() or path.is_symlink():
            raise
        raise InputError(f"{path}: exists and is not a link; expected a link to a runtime image") from err
    make_dirs(path.parent)
    with placed(path) as tmp:
        os.symlink(target, tmp)
    return True


def linked_image(path: Path) -> str | None:
    """The file name of the image ``path`` links to (None: no link, or masked)."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return None if target == "/dev/null" else Path(target).name


def linked_version(link: Path, runtime: str) -> str | None:
    """The runtime version of the bakery image ``link`` names, whatever its
    architecture (None: no link, masked, or not a bakery image's name)."""
    image = linked_image(link)
    if image is None:
        return None
    return next((v for arch in sorted(set(ARCH_BY_BOARD.values())) if (v := version_of(image, runtime, arch))), None)


def version_of(image: str, runtime: str, arch: str) -> str | None:
    """The runtime version in a bakery image name, None when it is not one."""
    prefix, suffix = f"{runtime}-", f"-{arch}.raw"
    if image.startswith(prefix) and image.endswith(suffix):
        version = image[len(prefix):-len(suffix)]
        return version if NAME.matches(version) else None
    return None
