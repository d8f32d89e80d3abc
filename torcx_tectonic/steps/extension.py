"""Steps of the sysext backend: the runtime image for the Kubernetes version,
stored, checked against the running and the next OS, and linked for
systemd-sysext; GC of older images.

The same guarantee as with torcx: the node runs the runtime version its
Kubernetes accepts, and will still after it boots the next OS. Flatcar's own
update path renews only its own and OEM extensions for the next OS; an image
an operator chose is never checked against it, which is what this does
before it links one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from ..config import Config
from ..edges.atomic import fsync_dir
from ..edges.inputfile import decode_text, read_text
from ..errors import ConfigError, InputError
from ..state import ExtensionInstalled, OsVersions, RuntimeChoice, StoresCollected
from ..strategy import NoRuntimeVersion, pinned_version
from ..sysext import images as sysext
from ..sysext import sysupdate
from ..sysext.backend import kept_images
from ..sysext.switch import linked_before, switch
from ..torcx.bucket import Bucket
from ..torcx.manifest import file_digest
from .context import Context
from .kubeversion import kubelet_version
from .runtime import read_pin

log = logging.getLogger(__name__)

SUMS = "SHA256SUMS"
E = TypeVar("E", bound=ExtensionInstalled)


def _images_url(config: Config) -> str:
    if not config.sysext.images_url:
        raise ConfigError("[sysext] images_url is not set; expected the URL template of the runtime images, e.g. "
                          "https://mirror.example/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw",
                          hint="set it in /etc/torcx-tectonic/conf.d/, with [runtime] backend = sysext")
    return config.sysext.images_url


def signed_sums(ctx: Context, name: str) -> tuple[dict[str, str], str]:
    """The signed checksum list, verified, parsed and kept in the cache for
    the install step; its sha256 for the record."""
    config, sx = ctx.config, ctx.config.sysext
    _images_url(config)
    with Bucket(config) as bucket:
        raw = bucket.signed(sx.sums_url, f"checksum list of the {name} images", verify=sx.verify_signatures,
                            keyring=sx.keyring)
    sums = sysext.parse_sums(decode_text(raw, sx.sums_url, "a SHA256SUMS list"), sx.sums_url)
    return sums, sysext.verified_cache(ctx.paths.cache_dir).store(SUMS, raw)


def choose_image(ctx: Context) -> RuntimeChoice:
    """The runtime version: the first one the Kubernetes version accepts that
    the checksum list has an image of, for this node's architecture. The
    Kubernetes version is the kubelet image's when the run chose one: the
    runtime follows the minor the kubelet runs."""
    sx, paths = ctx.config.sysext, ctx.paths
    transfer = sysupdate.owner(paths, sx.runtime)
    if transfer is not None:  # the runtime is the promise: refuse, and say how to hand it over
        raise ConfigError(transfer.refusal(sx.runtime, paths.on_node(paths.extension_link(sx.runtime))))
    os_versions = ctx.state.load(OsVersions)
    kube = kubelet_version(ctx.state)
    arch = sysext.arch_of(os_versions.board)
    sums, digest = signed_sums(ctx, sx.runtime)
    available = sysext.offered(sums, sx.runtime, arch)
    log.info("%s offers %s images %s for %s", sx.sums_url, sx.runtime, ", ".join(available) or "none", arch)
    cluster = ctx.cluster()
    mappings = cluster.runtime_mappings()
    ctx.remember(cluster)
    pin = read_pin(ctx, cluster, mappings, sx.runtime)
    try:
        preferred = mappings.versions_for(kube, sx.runtime)
    except InputError as err:
        raise NoRuntimeVersion(f"no {sx.runtime} version for Kubernetes {kube}: {err}; {sx.sums_url} offers "
                               f"{', '.join(available) or 'none'}") from None
    version = pinned_version(pin, sx.runtime, {f"{sx.sums_url} for {arch}": available}) if pin else next(
        (v for v in preferred if v in available), "")
    if not version:
        raise NoRuntimeVersion(
            f"no {sx.runtime} version for Kubernetes {kube}: the mappings from {mappings.source} accept "
            f"{', '.join(preferred)}, {sx.sums_url} offers {', '.join(available) or 'none'} for {arch}")
    targets = tuple(dict.fromkeys(v for v in (os_versions.next, os_versions.current) if v))
    log.info("%s %s for Kubernetes %s, for OS %s", sx.runtime, version, kube, ", ".join(targets))
    return RuntimeChoice(runtime=sx.runtime, version=version, os_versions=targets, kube_version=kube,
                         preferred=tuple(preferred), mapping_source=mappings.source,
                         offered=dict.fromkeys(targets, available), manifests={SUMS: digest})


def host_releases(ctx: Context, os_versions: OsVersions) -> dict[str, sysext.Release]:
    """The release of each OS version the image must fit: the running OS's
    os-release, and the next OS as update_engine names it."""
    path = ctx.paths.os_release
    current = sysext.release_from_text(read_text(path, "os-release"), str(path))
    releases = {os_versions.current: current}
    if os_versions.next:
        releases[os_versions.next] = sysext.next_release(current, os_versions.next)
    return releases


def install_extension(ctx: Context) -> ExtensionInstalled:
    """Store the chosen runtime image (downloaded once, sha256 checked),
    check that the running and the next OS would merge it, then link it for
    systemd-sysext."""
    sx = ctx.config.sysext
    choice = ctx.state.load(RuntimeChoice)
    assert choice.version is not None  # choose_image always picks one
    return install_image(ctx, sx.runtime, choice.version, choice.manifests.get(SUMS), ExtensionInstalled,
                         mask_builtin=sx.mask_builtin)


def install_image(ctx: Context, name: str, version: str, sums_digest: str | None, record: type[E], *,
                  mask_builtin: bool) -> E:
    """Put the image ``name`` of ``version`` in place for systemd-sysext,
    whichever image it is (the runtime's, the kubelet's): stored, checked
    against both OS versions, linked at /etc/extensions/<name>.raw."""
    paths = ctx.paths
    os_versions = ctx.state.load(OsVersions)
    arch = sysext.arch_of(os_versions.board)
    image, action, size = _stored_image(ctx, name, version, sums_digest, arch)
    release = sysext.read_release(image, name)
    link = paths.extension_link(name)
    fits = _fits(release, host_releases(ctx, os_versions), image.name, arch, link)
    sysext.verified_cache(paths.cache_dir).store(f"{image.name}.release", _release_text(release).encode())
    previous = linked_before(paths, name, arch, version)
    changed, activated = switch(ctx.config, paths, name, image, version, previous, mask_builtin=mask_builtin)
    log.info("%s links %s%s; merged %s", link, image.name, "" if changed else " (unchanged)", activated)
    return record(runtime=name, version=version, image=str(image), link=str(link), action=action, bytes=size,
                  previous=previous, runtime_changed=previous != version, fits=fits, activated=activated)


def _stored_image(ctx: Context, name: str, version: str, sums_digest: str | None, arch: str) -> tuple[Path, str, int]:
    """The chosen image in the store, with the sum the verified checksum list
    gives it: found there ("present") or downloaded now, and its size then."""
    paths = ctx.paths
    cache = sysext.verified_cache(paths.cache_dir)
    sums = sysext.parse_sums(decode_text(cache.read(SUMS, "checksum list", sums_digest), str(cache.file(SUMS)),
                                         "a SHA256SUMS list"), str(cache.file(SUMS)))
    file_name = sysext.image_name(name, version, arch)
    if file_name not in sums:
        raise InputError(f"{cache.file(SUMS)}: no sum of {file_name}, which the {name} step chose from it")
    store = paths.image_store / name
    image = store / file_name
    if image.is_file() and file_digest(image, "sha256") == sums[file_name]:
        return image, "present", 0
    url = sysext.fill(_images_url(ctx.config), name, version, arch)
    log.info("downloading %s from %s", file_name, url)
    with Bucket(ctx.config) as bucket:
        sysext.store_image(store, file_name, sums[file_name], bucket.download(url, file_name), url)
    return image, "downloaded", image.stat().st_size


def _fits(release: sysext.Release, hosts: dict[str, sysext.Release], name: str, arch: str, link: Path) -> dict[
        str, str]:
    """Why each OS version's systemd-sysext merges the image; an OS that
    would not merge it refuses the image, naming the field."""
    fits = {}
    for os_version, host in hosts.items():
        problem = sysext.misfit(release, host, arch)
        if problem is not None:
            raise InputError(f"{name} does not fit OS {os_version}: {problem}; systemd-sysext would not merge it, "
                             f"so it is not linked (the node keeps what {link} links to)")
        fits[os_version] = _fit(release, host)
    return fits


def _fit(image: sysext.Release, host: sysext.Release) -> str:
    if image.sysext_level is not None and host.sysext_level is not None:
        return f"SYSEXT_LEVEL={image.sysext_level} matches"
    return f"VERSION_ID={image.version_id} matches"


def _release_text(release: sysext.Release) -> str:
    fields = (("ID", release.id), ("VERSION_ID", release.version_id), ("SYSEXT_LEVEL", release.sysext_level),
              ("ARCHITECTURE", release.architecture))
    return "".join(f"{key}={value}\n" for key, value in fields if value is not None)


def collect_images(ctx: Context) -> StoresCollected:
    """Remove images beyond ``[sysext] keep`` of each image kept (the
    runtime's, the kubelet's); never a linked one."""
    current = ctx.state.load(OsVersions).current
    removed = [name for image in kept_images(ctx.config) for name in _collect(ctx, image)]
    return StoresCollected(current_os=current, removed=tuple(removed))


def _collect(ctx: Context, name: str) -> list[str]:
    sx, paths = ctx.config.sysext, ctx.paths
    store = paths.image_store / name
    if not store.is_dir():
        return []
    images = sorted((p for p in store.iterdir() if p.is_file() and p.name.endswith(".raw")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    linked = sysext.linked_image(paths.extension_link(name))
    removed = sysext.select_gc([p.name for p in images], [linked] if linked else [], sx.keep)
    cache = sysext.verified_cache(paths.cache_dir)
    for file_name in removed:
        # its cached extension-release first: a GC killed between the two finds the image again, and removes both
        cache.remove(f"{file_name}.release")
        (store / file_name).unlink()
    if removed:
        fsync_dir(store)
    log.info("removed %s images beyond the %d kept: %s", name, sx.keep, ", ".join(removed) or "none")
    return removed
