"""The sysext backend: what systemd-sysext merges, now and at the next
boot, and the verdict for each OS version.

The runtime image is the one ``/etc/extensions/<runtime>.raw`` links to;
the running OS merged it at boot unless a step of this boot changed the
link since (this boot's install records say which image was linked
before), and the next OS merges it if its extension-release fits the next
OS's release as systemd-sysext decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..cluster import skew
from ..config import Config
from ..edges.inputfile import decode_text, read_text
from ..errors import NothingToRollBack, TorcxTectonicError
from ..flows import ROLLBACK, all_flows, kubelet_image
from ..node import dockerdata
from ..paths import NodePaths
from ..state import ExtensionInstalled, FlowState, KubeletImageInstalled, Record, RolledBack, RuntimeChange, StateError
from ..verdict import Facts, ImageVerdicts, RuntimeView, Verdict
from . import images as sysext
from . import sysupdate
from .switch import linked_before, switch

R = TypeVar("R", bound=Record)

KUBERNETES = sysext.KUBERNETES


@dataclass(frozen=True)
class Image:
    """A runtime image in the store, and whether the link names it."""

    name: str
    version: str | None
    path: str
    size: int
    linked: bool


def kept_images(config: Config) -> tuple[str, ...]:
    """The names of the images the backend keeps in step: the runtime's, and
    the kubelet's when it is told to."""
    return (config.sysext.runtime, *((KUBERNETES,) if kubelet_image(config) else ()))


def sysext_verdict(*, os_version: str | None, runtime: str, image: str | None, version: str | None, link: str,
                   misfit: str | None, kube_version: str | None, wanted: Sequence[str],
                   mapping_source: str) -> Verdict:
    """Whether ``os_version`` merges a runtime image the Kubernetes version accepts."""
    if os_version is None:
        return Verdict(None, False, None, "the OS version is not known")
    if image is None:
        return Verdict(os_version, False, None, f"{link} links no runtime image: OS {os_version} runs Flatcar's own "
                       f"{runtime}, which torcx-tectonic did not choose")
    unfit = _unfit(os_version, image, version, misfit, link, runtime, f"{runtime}-VERSION-ARCH.raw")
    if unfit is not None:
        return unfit
    if kube_version is None:
        return Verdict(os_version, False, version, f"{image}, but no Kubernetes version is known")
    if version not in wanted:
        return Verdict(os_version, False, version, f"{link} links {image}, which Kubernetes {kube_version} does not "
                       f"accept (it accepts {', '.join(wanted) or 'nothing known'}, from {mapping_source})")
    return Verdict(os_version, True, version, f"{runtime} {version} from {image} (linked by {link}); Kubernetes "
                   f"{kube_version} accepts {', '.join(wanted)} ({mapping_source})")


class SysextBackend:
    """A runtime from a system extension image: the image store and the link
    that systemd-sysext merges."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.runtime = config.sysext.runtime

    def merged(self, paths: NodePaths, name: str | None = None) -> bool:
        """Whether this boot merged an extension named ``name`` (default: the runtime's)."""
        return (paths.root / sysext.RELEASE_DIR / f"extension-release.{name or self.runtime}").exists()

    def changes_this_boot(self, paths: NodePaths, record: type[ExtensionInstalled] = ExtensionInstalled) -> list[
            ExtensionInstalled | RolledBack]:
        """This boot's install records of ``record``'s kind (and, for the
        runtime, rollbacks) that changed the link, oldest first."""
        records: list[tuple[float, ExtensionInstalled | RolledBack | None]] = [
            *(_this_boot(paths, flow.name, record) for flow in all_flows(self.config))]
        if record is ExtensionInstalled:
            records.append(_this_boot(paths, ROLLBACK, RolledBack))
        return [installed for _, installed in sorted(records, key=lambda pair: pair[0])
                if installed is not None and installed.runtime_changed]

    def booted(self, paths: NodePaths) -> str | None:
        """The runtime version systemd-sysext merged: the image linked at boot
        (before this boot's first change of the link), or the one a step
        merged since (``activate = refresh``). None: no image of the runtime's
        name is merged (Flatcar's own runs, or none)."""
        return self.booted_image(paths, self.runtime, ExtensionInstalled)

    def booted_image(self, paths: NodePaths, name: str, record: type[ExtensionInstalled]) -> str | None:
        """The version of the image ``name`` systemd-sysext merged in this
        boot, as ``booted`` says it for the runtime (``record``: the kind of
        the records of its install step)."""
        if not self.merged(paths, name):
            return None
        changes = self.changes_this_boot(paths, record)
        merged = changes[0].previous if changes else sysext.linked_version(paths.extension_link(name), name)
        for change in changes:
            if change.activated == sysext.MERGED_NOW:
                merged = change.version
        return merged

    def leftovers(self, paths: NodePaths) -> list[Path]:
        """Nothing beyond temporary files: the GC removes images in place."""
        return []

    def view(self, paths: NodePaths, facts: Facts, *, check_hashes: bool = True) -> RuntimeView:
        """The verdicts of the running and the next OS, and the image store."""
        runtime = self.runtime
        link = paths.extension_link(runtime)
        arch = sysext.ARCH_BY_BOARD.get(facts.board or "", "")
        image = sysext.linked_image(link)
        version = sysext.version_of(image, runtime, arch) if image else None
        problems: list[str] = []
        release = _cached_release(paths, image, problems)
        host = None
        try:
            host = sysext.release_from_text(paths.os_release.read_text(), str(paths.os_release))
        except (OSError, UnicodeDecodeError, TorcxTectonicError) as err:
            problems.append(str(err))

        def verdict_of(os_version: str | None, release_of: sysext.Release | None) -> Verdict:
            misfit = sysext.misfit(release, release_of, arch) if release is not None and release_of is not None \
                else None
            return sysext_verdict(os_version=os_version, runtime=runtime, image=image, version=version,
                                  link=paths.on_node(link), misfit=misfit, kube_version=facts.kube_version,
                                  wanted=facts.wanted, mapping_source=facts.mapping_source)

        merged = self.merged(paths)
        booted = self.booted(paths)
        current = dataclasses.replace(verdict_of(facts.current_os, host), notes=(
            f"a {runtime} extension is merged now" if merged else f"no {runtime} extension is merged in this boot",))
        if facts.reset_pending is not None:
            current = dataclasses.replace(current, notes=(
                *current.notes, f"{runtime} changes at the next boot ({facts.reset_pending}): {paths.docker_data} "
                "is emptied before it starts"))
        upcoming = None
        if facts.next_os is not None and host is not None:
            upcoming = dataclasses.replace(verdict_of(facts.next_os, sysext.next_release(host, facts.next_os)), notes=(
                "the next OS's ID and SYSEXT_LEVEL are taken from the running OS; its version from update_engine",))
        store = paths.image_store / runtime
        images = tuple(Image(p.name, sysext.version_of(p.name, runtime, arch), paths.on_node(p), p.stat().st_size,
                             p.name == image)
                       for p in sorted(store.glob("*.raw")) if p.is_file()) if store.is_dir() else ()
        if not merged:
            booted_source = f"no {runtime} extension is merged in this boot (Flatcar's own {runtime}, or none)"
        elif booted is None:
            booted_source = f"a {runtime} extension is merged, but not one of the images {paths.on_node(link)} names"
        else:
            booted_source = f"merged by systemd-sysext in this boot, from the image {paths.on_node(link)} linked"
        sections = [("images", _image_lines(paths.on_node(link), paths.on_node(store), images))]
        document: dict[str, Any] = {"images": {"link": paths.on_node(link), "store": paths.on_node(store),
                                               "images": [dataclasses.asdict(i) for i in images]}}
        kept = []
        if kubelet_image(self.config):
            kubelet = self.kubelet_view(paths, facts, host, arch, problems)
            kept.append(kubelet)
            sections.append(("kubelet image", _kubelet_lines(paths.on_node(paths.extension_link(KUBERNETES)),
                                                             kubelet)))
            document["kubelet"] = {"image": KUBERNETES, "link": paths.on_node(paths.extension_link(KUBERNETES)),
                                   "managed_by": kubelet.managed_by, "takes_over": kubelet.takes_over,
                                   "ok": kubelet.ok, "verdict": {
                                       "current": _verdict_document(kubelet.current),
                                       "next": _verdict_document(kubelet.next) if kubelet.next else None}}
        return RuntimeView(current=current, next=upcoming, booted=booted, booted_source=booted_source,
                           sections=tuple(sections), document=document, problems=tuple(problems), images=tuple(kept))

    def roll_back(self, paths: NodePaths, facts: Facts, change: RuntimeChange) -> RolledBack:
        """Link ``change.previous``'s image again, once it is still in the
        store (the GC keeps ``[sysext] keep`` images, never the linked one)
        and the running and the next OS would both merge it."""
        runtime, target = self.runtime, change.previous
        link = paths.extension_link(runtime)
        linked = sysext.linked_version(link, runtime)
        if target is None or target == linked:
            raise NothingToRollBack(f"{paths.on_node(link)} links {runtime} {target} already" if target else
                                    f"{runtime} {change.version} replaced Flatcar's own image")
        arch = sysext.arch_of(facts.board or "?")
        image = paths.image_store / runtime / sysext.image_name(runtime, target, arch)
        if not image.is_file():
            raise NothingToRollBack(f"{runtime} {target}, which ran before {change.version}, is no longer kept: "
                                    f"{paths.on_node(image)} is missing (the GC keeps {self.config.sysext.keep} "
                                    "images, [sysext] keep)")
        release = _release_of(paths, image, runtime)
        host = sysext.release_from_text(read_text(paths.os_release, "os-release"), str(paths.os_release))
        hosts = {facts.current_os or "running": host}
        if facts.next_os:
            hosts[facts.next_os] = sysext.next_release(host, facts.next_os)
        for os_version, host_release in hosts.items():
            problem = sysext.misfit(release, host_release, arch)
            if problem is not None:
                raise NothingToRollBack(f"{image.name} does not fit OS {os_version}: {problem}; systemd-sysext would "
                                        "not merge it, so it is not linked")
        booted = self.booted(paths)  # before the link changes: it names what booted when no step changed it
        _, applies = switch(self.config, paths, runtime, image, target, linked_before(paths, runtime, arch, target),
                            mask_builtin=self.config.sysext.mask_builtin)
        if booted == target:
            dockerdata.cancel(paths.docker_reset_marker)  # the older Docker is the one running: its data stays
        pending = dockerdata.pending(paths.docker_reset_marker)
        return RolledBack(runtime=runtime, previous=linked, version=target, found=(paths.on_node(image),),
                          reset=f"{pending[0]} → {pending[1]}" if pending else None, activated=applies)

    def kubelet_view(self, paths: NodePaths, facts: Facts, host: sysext.Release | None, arch: str,
                     problems: list[str]) -> ImageVerdicts:
        """The kubelet image's verdicts: the image the link names, whether each
        OS merges it and whether it is the version kubelet.env selects; or
        that systemd-sysupdate decides it."""
        link = paths.extension_link(KUBERNETES)
        image = sysext.linked_image(link)
        version = sysext.version_of(image, KUBERNETES, arch) if image else None
        release = _cached_release(paths, image, problems)
        try:
            transfer = sysupdate.owner(paths, KUBERNETES)
        except TorcxTectonicError as err:
            problems.append(str(err))
            transfer = None
        managed_by = transfer.describe() if transfer is not None else None

        def verdict_of(os_version: str | None, release_of: sysext.Release | None) -> Verdict:
            misfit = sysext.misfit(release, release_of, arch) if release is not None and release_of is not None \
                else None
            return kubelet_verdict(os_version=os_version, image=image, version=version, link=paths.on_node(link),
                                   misfit=misfit, kube_version=facts.kube_version, managed_by=managed_by)

        upcoming = None
        if facts.next_os is not None and host is not None:
            upcoming = verdict_of(facts.next_os, sysext.next_release(host, facts.next_os))
        booted = self.booted_image(paths, KUBERNETES, KubeletImageInstalled)
        takes_over = None
        if version is not None and booted != version and managed_by is None:
            takes_over = (f"kubelet {version} takes over at the next boot, when systemd-sysext merges its image "
                          f"({booted or 'no kubelet image'} is merged now; kubelet.service keeps the binary it "
                          "started with until then)")
        return ImageVerdicts(KUBERNETES, verdict_of(facts.current_os, host), upcoming, managed_by=managed_by,
                             takes_over=takes_over)


def kubelet_verdict(*, os_version: str | None, image: str | None, version: str | None, link: str,
                    misfit: str | None, kube_version: str | None, managed_by: str | None) -> Verdict:
    """Whether ``os_version`` merges the kubelet image of the version kubelet.env selects."""
    if os_version is None:
        return Verdict(None, False, None, "the OS version is not known")
    if managed_by is not None:
        return Verdict(os_version, image is not None, version, f"{link} is {managed_by}: it decides the kubelet's "
                       f"version, not torcx-tectonic ({f'it links {image}' if image else 'it links nothing yet'})")
    if image is None:
        return Verdict(os_version, False, None, f"{link} links no kubelet image")
    named = version if version is not None and skew.image_version(version) is not None else None
    unfit = _unfit(os_version, image, named, misfit, link, "kubelet", f"{KUBERNETES}-vX.Y.Z-ARCH.raw")
    if unfit is not None:
        return unfit
    assert named is not None  # _unfit refuses a name that is no kubelet image's
    if kube_version is None:
        return Verdict(os_version, False, version, f"{image}, but kubelet.env selects no Kubernetes version")
    try:
        selected = skew.api_version(kube_version, "kubelet.env")
    except TorcxTectonicError as err:
        return Verdict(os_version, False, version, str(err))
    if selected != skew.image_version(named):
        return Verdict(os_version, False, version, f"{link} links {image}, but kubelet.env selects {kube_version}")
    return Verdict(os_version, True, version, f"kubelet {version} from {image} (linked by {link}), the version "
                   f"kubelet.env selects")


def _unfit(os_version: str, image: str, version: str | None, misfit: str | None, link: str, what: str,
           expected: str) -> Verdict | None:
    """Why ``os_version`` would not merge the linked image, whichever it is:
    a name that is no image of ``what``, or an extension-release that does
    not fit the OS (None: it merges)."""
    if version is None:
        return Verdict(os_version, False, None, f"{link} links {image}, which is not a {what} image by name "
                       f"(expected {expected})")
    if misfit is not None:
        return Verdict(os_version, False, version, f"OS {os_version} would not merge {image}: {misfit}")
    return None


def _cached_release(paths: NodePaths, image: str | None, problems: list[str]) -> sysext.Release | None:
    """The extension-release the install step read from ``image``, as it cached it."""
    if not image:
        return None
    try:
        text = decode_text(sysext.verified_cache(paths.cache_dir).read(f"{image}.release", "extension-release"),
                           image, "an extension-release")
        return sysext.release_from_text(text, image)
    except TorcxTectonicError as err:
        problems.append(f"{err}: the image's fit is not checked")
        return None


def _verdict_document(verdict: Verdict) -> dict[str, Any]:
    return {"os": verdict.os, "ok": verdict.ok, "version": verdict.runtime_version, "reason": verdict.reason,
            "notes": list(verdict.notes)}


def _kubelet_lines(link: str, kubelet: ImageVerdicts) -> tuple[str, ...]:
    lines = [f"  {'link:':15} {link}", f"  {'decided by:':15} {kubelet.managed_by or 'torcx-tectonic'}"]
    if kubelet.takes_over:
        lines.append(f"  {'takes over:':15} {kubelet.takes_over}")
    return tuple(lines)


def _image_lines(link: str, store: str, images: Sequence[Image]) -> tuple[str, ...]:
    lines = [f"  {'link:':15} {link}"]
    if not images:
        lines.append(f"  {'store:':15} {store} (no images)")
    for item in images:
        lines.append(f"  {('linked:' if item.linked else 'kept:'):15} {item.name} ({item.size} bytes) {item.path}")
    return tuple(lines)


def _this_boot(paths: NodePaths, flow: str, kind: type[R]) -> tuple[float, R | None]:
    """When this boot's run of ``flow`` began and its record of ``kind`` (None: none)."""
    state = FlowState(paths, flow)
    try:
        return state.current().started, state.load(kind)
    except TorcxTectonicError:
        return 0.0, None


def _release_of(paths: NodePaths, image: Path, runtime: str) -> sysext.Release:
    """The image's extension-release: as the install step cached it, else
    read from the image."""
    cache = sysext.verified_cache(paths.cache_dir)
    try:
        text = decode_text(cache.read(f"{image.name}.release", "extension-release"), image.name,
                           "an extension-release")
    except StateError:
        return sysext.read_release(image, runtime)
    return sysext.release_from_text(text, image.name)
