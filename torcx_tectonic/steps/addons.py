"""Steps: put the chosen addon into the stores of its OS versions and select
it in the profile; collect the versioned stores no OS will boot again.

An addon is downloaded at most once per run: when another OS version needs
the same bytes (the same sha512), its store gets a hard link of the file
already verified in this run (a verified copy across filesystems), so GC of
one store never harms the other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Config
from ..edges import source
from ..errors import InputError
from ..node import dockerdata
from ..paths import NodePaths
from ..state import AddonPlacement, AddonsInstalled, ManifestCache, OsVersions, RuntimeChoice, StoresCollected
from ..torcx import profile, store
from ..torcx.manifest import PackageVersion, file_digest, parse_package_list

if TYPE_CHECKING:
    from ..torcx.bucket import Bucket

from .context import Context

log = logging.getLogger(__name__)


class Downloads:
    """The release bucket, opened for the first download of the step: a run
    that finds every addon in place loads no HTTP library at all."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.bucket: Bucket | None = None

    def download(self, url: str, what: str) -> Iterator[bytes]:
        if self.bucket is None:
            from ..torcx.bucket import Bucket

            self.bucket = Bucket(self.config)
        return self.bucket.download(url, what)

    def close(self) -> None:
        if self.bucket is not None:
            self.bucket.session.close()


def install_addons(ctx: Context) -> AddonsInstalled:
    """Put the chosen addon in the stores of its OS versions and select it."""
    addon = ctx.config.torcx.addon
    os_versions = ctx.state.load(OsVersions)
    choice = ctx.state.load(RuntimeChoice)
    if choice.version is None:
        return AddonsInstalled(runtime=addon, version=None)
    cache = ManifestCache(ctx.paths.cache_dir)
    placements: list[AddonPlacement] = []
    downloads = Downloads(ctx.config)
    try:
        for os_version in choice.os_versions:
            raw = cache.get(os_versions.board, os_version, choice.manifests.get(os_version))
            origin = str(cache.path(os_versions.board, os_version))
            package = parse_package_list(raw, origin).package(addon)
            found = package.find(choice.version) if package else None
            if found is None:
                raise InputError(f"{origin}: the manifest for OS {os_version} has no {addon} {choice.version}, "
                                 "which the runtime step chose from it")
            placements.append(place(ctx, downloads, os_version, os_versions.current, found, placements))
    finally:
        downloads.close()
    previous, changed, name = select(ctx.paths, ctx.config, choice.version)
    log.info("profile %s selects %s:%s%s", name, addon, choice.version, "" if changed else " (unchanged)")
    return AddonsInstalled(runtime=addon, version=choice.version, placements=tuple(placements), profile=name,
                           changed_files=tuple(str(p) for p in changed), previous=previous,
                           runtime_changed=previous != choice.version)


def place(ctx: Context, downloads: Downloads, os_version: str, current: str, found: PackageVersion,
          earlier: list[AddonPlacement]) -> AddonPlacement:
    """Make the addon available to ``os_version``: from its own vendor store,
    as already stored, linked from this run's earlier placement, or downloaded."""
    addon = ctx.config.torcx.addon
    vendor = found.vendor_path()  # as the manifest names it, on the node
    if vendor is not None:
        # the next OS has its own /usr with that file; the running OS's must be checked
        here = ctx.paths.vendor_store / vendor.name
        if os_version != current or (here.is_file() and file_digest(here) == found.sha512):
            return AddonPlacement(os=os_version, action="vendor", path=str(vendor))
        log.warning("%s is listed but not present with the right hash: downloading instead", vendor)
    target_store = store.versioned_store(ctx.paths.user_store, os_version)
    target = target_store / store.addon_filename(addon, found.version)
    if store.has_addon(target_store, addon, found.version, found.sha512):
        return AddonPlacement(os=os_version, action="present", path=str(target))
    same = next((Path(p.path) for p in earlier if p.action != "vendor" and Path(p.path).name == target.name
                 and Path(p.path).is_file() and file_digest(Path(p.path)) == found.sha512), None)
    if same is not None:
        how = store.link_addon(target_store, addon, found.version, found.sha512, same)
        log.info("%s for OS %s: %s from %s (no second download)", target.name, os_version, how, same)
        return AddonPlacement(os=os_version, action="linked", path=str(target))
    url = found.url()
    if ctx.config.torcx.addon_mirror:  # the mirror instead of the manifest's URL; the manifest's sha512 all the same
        url = source.mirrored_addon_url(ctx.config.torcx.addon_mirror, ctx.state.load(OsVersions).board, os_version,
                                        target.name)
    if url is None:
        raise InputError(f"manifest for OS {os_version}: {addon} {found.version} has no url and is not in the "
                         "vendor store")
    log.info("downloading %s for OS %s from %s", target.name, os_version, url)
    stored = store.install_addon(target_store, addon, found.version, found.sha512,
                                 downloads.download(url, f"{target.name} for OS {os_version}"), url)
    return AddonPlacement(os=os_version, action="downloaded", path=str(target), url=url, bytes=stored.stat().st_size)


def select(paths: NodePaths, config: Config, version: str) -> tuple[str | None, list[Path], str]:
    """Make the next profile select ``version``; arrange emptying Docker's
    data when the Docker that runs (or was to run) changes. Returns the
    version before, the files rewritten and the profile's name. The install
    step selects forward, a rollback back, by the same rule."""
    addon = config.torcx.addon
    booted = profile.booted_reference(paths.torcx_metadata, addon)
    before = booted
    if before is None:
        next_name = profile.read_next_profile(paths.next_profile)
        for directory in (paths.user_profiles, paths.vendor_profiles):
            before = profile.selected_reference(profile.load_profile(directory, next_name or "vendor"), addon)
            if before:
                break
    # The reset marker first: once the profile selects the new version, a run
    # after a crash finds it selected and would no longer know that it changes.
    if before != version and dockerdata.arrange(paths.docker_reset_marker, before, version):
        log.warning("%s changes from %s to %s: %s will be emptied before it starts", addon, before, version,
                    paths.docker_data)
    name, changed = profile.select_image(user_profiles=paths.user_profiles, vendor_profiles=paths.vendor_profiles,
                                         next_profile_file=paths.next_profile, configured=config.torcx.profile,
                                         name=addon, reference=version)
    # Only what torcx says booted can cancel a pending reset: the next profile
    # already names the new version after a first run.
    if booted == version and dockerdata.cancel(paths.docker_reset_marker):
        log.info("%s %s is the one running again: %s will not be emptied", addon, version, paths.docker_data)
    return before, changed, name


def collect_stores(ctx: Context) -> StoresCollected:
    """Remove versioned stores older than the running OS (docs/design.md, 'Garbage collection')."""
    current = ctx.state.load(OsVersions).current
    removed = store.gc_versioned_stores(ctx.paths.user_store, current)
    log.info("removed versioned stores older than %s: %s", current, ", ".join(removed) or "none")
    return StoresCollected(current_os=current, removed=tuple(removed))
