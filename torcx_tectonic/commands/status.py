"""The node's answer to "will it boot with the Docker its Kubernetes needs?".

``gather`` reads what is on the node's disk — os-release, kubelet.env, the
runtime mappings, the torcx stores and profiles, the flows' records and run
records — and never the network, so it works on a fresh node, after a
failure, and as a non-root user where the files are readable. ``verdict``
is a pure function of those facts, for the running OS and for the next
one: the Docker version torcx will apply when that OS boots, and whether it
is one the Kubernetes version accepts, or exactly why not.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cluster.mappings import kube_minor
from ..cluster.view import local_mappings
from ..config import Config, runtime_name
from ..edges.inputfile import decode_text
from ..errors import TorcxTectonicError
from ..flows import all_flows, path_units
from ..node import kubeletenv, systemd
from ..node.osrelease import os_release_from_text, parse_os_version
from ..paths import NodePaths
from ..state import (
    RUNNING,
    FlowState,
    ManifestCache,
    OsVersions,
    Run,
    RuntimeChoice,
    load_run,
)
from ..strategy import ADDON_EPOCH, supports_addons
from ..sysext import images as sysext
from ..torcx import profile, store
from ..torcx.manifest import PackageList, file_digest, parse_package_list

KIND = "torcx-tectonic-status-v1"
#: hash states of an addon file
VERIFIED, MISMATCH, NOT_IN_MANIFEST, UNCHECKED, VENDOR = (
    "verified", "MISMATCH", "not in the manifest", "unchecked (no cached manifest)", "shipped with the OS")


@dataclass(frozen=True)
class Addon:
    name: str
    reference: str
    path: str
    size: int
    #: one of the hash states above; None when not checked (not named by a profile)
    hash: str | None = None


@dataclass(frozen=True)
class Store:
    """One torcx store: ``kind`` is vendor, oem or user; ``os`` is set for a versioned store."""

    kind: str
    path: str
    os: str | None
    addons: tuple[Addon, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """For one OS version: the runtime version torcx will apply when it
    boots, and whether that is right."""

    os: str | None
    ok: bool
    runtime_version: str | None
    reason: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FlowStatus:
    flow: str
    run: Run | None
    this_boot: bool

    @property
    def interrupted(self) -> bool:
        """Still "running" from an earlier boot: power was lost or the node rebooted mid-run."""
        return self.run is not None and self.run.result == RUNNING and not self.this_boot


@dataclass(frozen=True)
class Status:
    backend: str
    board: str | None
    current_os: str | None
    next_os: str | None
    next_source: str
    kube_version: str | None
    kube_source: str
    runtime: str
    wanted: tuple[str, ...]
    mapping_source: str
    booted: str | None
    next_profile: str
    next_profile_source: str
    profiles: dict[str, dict[str, tuple[str, ...]]]
    stores: tuple[Store, ...]
    reset_pending: str | None
    flows: tuple[FlowStatus, ...]
    path_units: dict[str, str]
    current: Verdict
    next: Verdict
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.current.ok and self.next.ok


# --- the pure decision ------------------------------------------------------------------------------

def verdict(*, os_version: str | None, runtime: str, kube_version: str | None, wanted: Sequence[str],
            mapping_source: str, profile_name: str, reference: str | None, profile_problem: str | None,
            location: str | None, hash_state: str | None, searched: Sequence[str]) -> Verdict:
    """Whether ``os_version`` boots with a runtime the Kubernetes version accepts."""
    if os_version is None:
        return Verdict(None, False, None, "the OS version is not known")
    try:
        if not supports_addons(os_version):
            return Verdict(os_version, True, reference,
                           f"OS {os_version} predates remote addons ({ADDON_EPOCH}): its own {runtime} runs")
    except TorcxTectonicError as err:
        return Verdict(os_version, False, None, str(err))
    if profile_problem is not None:
        return Verdict(os_version, False, None, profile_problem)
    if reference is None:
        return Verdict(os_version, False, None, f"profile {profile_name} selects no {runtime} image")
    image = f"{runtime}:{reference}"
    if location is None:
        return Verdict(os_version, False, reference,
                       f"profile {profile_name} selects {image}, which is in none of the stores OS {os_version} "
                       f"reads ({', '.join(searched)})")
    if hash_state == MISMATCH:
        return Verdict(os_version, False, reference,
                       f"{location} does not have the sha512 the manifest for OS {os_version} lists")
    if kube_version is None:
        return Verdict(os_version, False, reference, f"{image} from {location}, but no Kubernetes version is known "
                       "(neither kubelet.env nor the installer's)")
    if not wanted:
        return Verdict(os_version, False, reference, f"{image} from {location}, but which {runtime} versions "
                       f"Kubernetes {kube_version} accepts is not known ({mapping_source})")
    if reference not in wanted:
        return Verdict(os_version, False, reference,
                       f"profile {profile_name} selects {image}, which Kubernetes {kube_version} does not accept "
                       f"(it accepts {', '.join(wanted)}, from {mapping_source})")
    checked = f", {hash_state}" if hash_state else ""
    return Verdict(os_version, True, reference, f"{image} from {location}{checked}; Kubernetes {kube_version} "
                   f"accepts {', '.join(wanted)} ({mapping_source})")


# --- gathering the facts ------------------------------------------------------------------------------

def _read_os(paths: NodePaths) -> tuple[str | None, str | None, list[str]]:
    try:
        release = os_release_from_text(paths.os_release.read_text(), str(paths.os_release))
    except (OSError, UnicodeDecodeError) as err:
        return None, None, [f"{paths.os_release}: cannot read: {err}"]
    except TorcxTectonicError as err:
        return None, None, [str(err)]
    return release.board, release.version, []


def _latest(paths: NodePaths, cls: type[OsVersions] | type[RuntimeChoice], flows: Sequence[str]) -> list[object]:
    """This boot's records of ``cls``, the most recent run first."""
    found = []
    for flow in flows:
        state = FlowState(paths, flow)
        try:
            run = state.current()
            found.append((run.started, state.load(cls)))
        except TorcxTectonicError:
            continue
    return [value for _, value in sorted(found, key=lambda pair: pair[0], reverse=True)]


def _next_os(paths: NodePaths, current: str | None, flows: Sequence[str]) -> tuple[str | None, str, bool]:
    """The next OS version, where that came from, and whether it is known."""
    for record in _latest(paths, OsVersions, flows):
        assert isinstance(record, OsVersions)
        if record.current == current:
            if record.next:
                return record.next, f"{record.next_source}, as recorded in this boot", True
            if not paths.update_marker.exists():
                return None, "no OS update pending (recorded in this boot)", True
    if paths.update_marker.exists():
        return None, (f"update_engine applied an update ({paths.update_marker} exists) but no flow has recorded "
                      "its version in this boot"), False
    return None, f"no OS update applied ({paths.update_marker} does not exist)", True


def _kubernetes(config: Config) -> tuple[str | None, str]:
    for path, what in ((config.kubernetes.kubelet_env, "the kubelet's"),
                       (config.kubernetes.installer_kubelet_env, "the installer's (not bootstrapped yet)")):
        if path.exists():
            try:
                version = kubeletenv.kubelet_version(path)
                kube_minor(version)
            except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
                return None, f"{path}: {err}"
            return version, f"{path} ({what})"
    return None, f"neither {config.kubernetes.kubelet_env} nor {config.kubernetes.installer_kubelet_env} exists"


def _wanted(config: Config, paths: NodePaths, kube_version: str | None, flows: Sequence[str]) -> tuple[
        tuple[str, ...], str]:
    """The runtime versions the Kubernetes version accepts: as this boot's
    runtime step learnt them (from the cluster), else from the node-local mappings."""
    if kube_version is None:
        return (), "no Kubernetes version"
    for record in _latest(paths, RuntimeChoice, flows):
        assert isinstance(record, RuntimeChoice)
        if record.kube_version == kube_version and record.preferred:
            return record.preferred, f"{record.mapping_source}, as recorded in this boot"
    try:
        mappings = local_mappings(config)
        return mappings.versions_for(kube_version, config.torcx.addon), mappings.source
    except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
        return (), str(err)


def _manifest(cache: ManifestCache, board: str | None, os_version: str) -> PackageList | None:
    if board is None:
        return None
    try:
        raw = cache.get(board, os_version)
        return parse_package_list(raw, str(cache.path(board, os_version)))
    except TorcxTectonicError:
        return None


def _hash_state(manifest: PackageList | None, runtime: str, reference: str, path: Path, check: bool) -> str:
    found = manifest.package(runtime) if manifest else None
    version = found.find(reference) if found else None
    if manifest is None:
        return UNCHECKED
    if version is None:
        return NOT_IN_MANIFEST
    if not check:
        return "present (hash not checked)"
    try:
        return VERIFIED if file_digest(path) == version.sha512 else MISMATCH
    except OSError:
        return MISMATCH


def _stores(paths: NodePaths, current: str | None) -> list[Store]:
    """Every store torcx may read on this node, in torcx's search order."""
    out = [Store("vendor", str(paths.vendor_store), None)]
    if current:
        out.append(Store("oem", str(paths.oem_store / current), current))
    out.append(Store("oem", str(paths.oem_store), None))
    if paths.user_store.is_dir():
        for entry in sorted(paths.user_store.iterdir()):
            try:
                parse_os_version(entry.name, "versioned store")
            except TorcxTectonicError:
                continue
            if entry.is_dir() and not entry.is_symlink():
                out.append(Store("user", str(entry), entry.name))
    out.append(Store("user", str(paths.user_store), None))
    listed = []
    for item in out:
        directory = Path(item.path)
        addons = tuple(Addon(name, ref, str(directory / store.addon_filename(name, ref)),
                             (directory / store.addon_filename(name, ref)).stat().st_size)
                       for name, ref in _safe_list(directory))
        listed.append(dataclasses.replace(item, addons=addons))
    return listed


def _safe_list(directory: Path) -> list[tuple[str, str]]:
    try:
        return [(n, r) for n, r in store.list_addons(directory) if _valid_name(n, r)]
    except OSError:
        return []


def _valid_name(name: str, reference: str) -> bool:
    try:
        store.addon_filename(name, reference)
    except TorcxTectonicError:
        return False
    return True


def _searched(stores: Sequence[Store], os_version: str, running: str | None) -> list[Store]:
    """The stores torcx reads when booting ``os_version`` (the vendor store is
    that OS's own /usr: visible only for the running OS)."""
    return [s for s in stores if (s.os is None or s.os == os_version) and (s.kind != "vendor" or os_version == running)]


def _profiles(paths: NodePaths) -> tuple[dict[str, dict[str, tuple[str, ...]]], list[str]]:
    out: dict[str, dict[str, tuple[str, ...]]] = {"user": {}, "vendor": {}}
    problems = []
    for kind, directory in (("user", paths.user_profiles), ("vendor", paths.vendor_profiles)):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.json")):
            try:
                loaded = profile.parse_profile(path.read_text(), str(path))
            except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
                problems.append(f"{path}: {err}")
                continue
            out[kind][path.name[:-len(".json")]] = tuple(f"{i.name}:{i.reference}" for i in loaded.images)
    return out, problems


def _selected(paths: NodePaths, runtime: str) -> tuple[str, str, str | None, str | None]:
    """The next profile's name, where that came from, the runtime reference
    it selects, and a problem that prevents knowing."""
    try:
        named = profile.read_next_profile(paths.next_profile)
    except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
        return "?", str(paths.next_profile), None, str(err)
    name = named or profile.VENDOR_PROFILE
    source = str(paths.next_profile) if named else f"the vendor default ({paths.next_profile} is absent)"
    for directory in (paths.user_profiles, paths.vendor_profiles):
        try:
            loaded = profile.load_profile(directory, name)
        except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
            return name, source, None, str(err)
        if loaded is not None:
            return name, source, profile.selected_reference(loaded, runtime), None
    return name, source, None, (f"the next profile {name} exists in neither {paths.user_profiles} nor "
                                f"{paths.vendor_profiles}")


@dataclass(frozen=True)
class Selection:
    """What decides every verdict but the OS version: the image the next
    profile selects and what the Kubernetes version accepts."""

    runtime: str
    profile_name: str
    reference: str | None
    profile_problem: str | None
    kube_version: str | None
    wanted: tuple[str, ...]
    mapping_source: str


def _locate(os_version: str, selection: Selection, stores: Sequence[Store], running: str | None,
            manifest: PackageList | None, check_hashes: bool) -> tuple[str | None, str | None, list[str]]:
    """Where torcx finds the selected image when it boots ``os_version``, its
    hash state, and the stores it searches."""
    runtime, reference = selection.runtime, selection.reference
    searched = _searched(stores, os_version, running)
    labels = [s.path for s in searched] + ([f"the vendor store of OS {os_version}"] if os_version != running else [])
    if reference is None:
        return None, None, labels
    for item in searched:
        if any(a.name == runtime and a.reference == reference for a in item.addons):
            location = Path(item.path) / store.addon_filename(runtime, reference)
            state = VENDOR if item.kind == "vendor" else _hash_state(manifest, runtime, reference, location,
                                                                     check_hashes)
            return str(location), state, labels
    package = manifest.package(runtime) if manifest and os_version != running else None
    found = package.find(reference) if package else None
    vendor = found.vendor_path() if found else None
    if vendor is not None:
        return f"{vendor} of OS {os_version} (per its manifest)", VENDOR, labels
    return None, None, labels


def _verdict_for(os_version: str | None, selection: Selection, stores: Sequence[Store], running: str | None,
                 cache: ManifestCache, board: str | None, check_hashes: bool) -> Verdict:
    location, hash_state, searched = (None, None, []) if os_version is None else _locate(
        os_version, selection, stores, running, _manifest(cache, board, os_version), check_hashes)
    return verdict(os_version=os_version, runtime=selection.runtime, kube_version=selection.kube_version,
                   wanted=selection.wanted, mapping_source=selection.mapping_source,
                   profile_name=selection.profile_name, reference=selection.reference,
                   profile_problem=selection.profile_problem, location=location, hash_state=hash_state,
                   searched=searched)


def _reset_pending(paths: NodePaths) -> str | None:
    try:
        document = json.loads(paths.docker_reset_marker.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{paths.docker_reset_marker} exists (unreadable)"
    if isinstance(document, dict):
        return f"{document.get('from')} → {document.get('to')}"
    return f"{paths.docker_reset_marker} exists"


# --- the sysext backend ---------------------------------------------------------------------------

def sysext_verdict(*, os_version: str | None, runtime: str, image: str | None, version: str | None, link: str,
                   misfit: str | None, kube_version: str | None, wanted: Sequence[str],
                   mapping_source: str) -> Verdict:
    """Whether ``os_version`` merges a runtime image the Kubernetes version accepts."""
    if os_version is None:
        return Verdict(None, False, None, "the OS version is not known")
    if image is None:
        return Verdict(os_version, False, None, f"{link} links no runtime image: OS {os_version} runs Flatcar's own "
                       f"{runtime}, which torcx-tectonic did not choose")
    if version is None:
        return Verdict(os_version, False, None, f"{link} links {image}, which is not a {runtime} image by name "
                       f"(expected {runtime}-VERSION-ARCH.raw)")
    if misfit is not None:
        return Verdict(os_version, False, version, f"OS {os_version} would not merge {image}: {misfit}")
    if kube_version is None:
        return Verdict(os_version, False, version, f"{image}, but no Kubernetes version is known")
    if version not in wanted:
        return Verdict(os_version, False, version, f"{link} links {image}, which Kubernetes {kube_version} does not "
                       f"accept (it accepts {', '.join(wanted) or 'nothing known'}, from {mapping_source})")
    return Verdict(os_version, True, version, f"{runtime} {version} from {image} (linked by {link}); Kubernetes "
                   f"{kube_version} accepts {', '.join(wanted)} ({mapping_source})")


def _sysext_view(config: Config, paths: NodePaths, board: str | None, current: str | None, next_os: str | None,
                 kube_version: str | None, wanted: Sequence[str], mapping_source: str) -> tuple[
                     Verdict, Verdict | None, list[Store], list[str]]:
    """The verdicts of the running and the next OS, and the image store."""
    runtime = config.sysext.runtime
    link = paths.extension_link(runtime)
    arch = sysext.ARCH_BY_BOARD.get(board or "", "")
    image = sysext.linked_image(link)
    version = sysext.version_of(image, runtime, arch) if image else None
    problems: list[str] = []
    release = None
    if image:
        try:
            text = decode_text(sysext.verified_cache(paths.cache_dir).read(f"{image}.release", "extension-release"),
                               image, "an extension-release")
            release = sysext.release_from_text(text, image)
        except TorcxTectonicError as err:
            problems.append(f"{err}: the image's fit is not checked")
    host = None
    try:
        host = sysext.release_from_text(paths.os_release.read_text(), str(paths.os_release))
    except (OSError, UnicodeDecodeError, TorcxTectonicError) as err:
        problems.append(str(err))

    def verdict_of(os_version: str | None, release_of: sysext.Release | None) -> Verdict:
        misfit = sysext.misfit(release, release_of, arch) if release is not None and release_of is not None else None
        return sysext_verdict(os_version=os_version, runtime=runtime, image=image, version=version,
                              link=paths.on_node(link), misfit=misfit, kube_version=kube_version, wanted=wanted,
                              mapping_source=mapping_source)

    current_verdict = verdict_of(current, host)
    merged = (paths.root / sysext.RELEASE_DIR / f"extension-release.{runtime}").exists()
    current_verdict = dataclasses.replace(current_verdict, notes=(
        f"a {runtime} extension is merged now" if merged else f"no {runtime} extension is merged in this boot",))
    next_verdict = None
    if next_os is not None and host is not None:
        next_verdict = verdict_of(next_os, sysext.next_release(host, next_os))
        next_verdict = dataclasses.replace(next_verdict, notes=(
            "the next OS's ID and SYSEXT_LEVEL are taken from the running OS; its version from update_engine",))
    store = paths.image_store / runtime
    images = tuple(Addon(runtime, sysext.version_of(p.name, runtime, arch) or p.name, paths.on_node(p),
                         p.stat().st_size, "linked" if p.name == image else None)
                   for p in sorted(store.glob("*.raw")) if p.is_file()) if store.is_dir() else ()
    return current_verdict, next_verdict, [Store("sysext", paths.on_node(store), None, images)], problems


def gather(config: Config, paths: NodePaths | None = None, *, check_hashes: bool = True,
           units: Callable[[Sequence[str]], dict[str, str]] = systemd.unit_states) -> Status:
    """Everything the status shows, read from the node's disk."""
    paths = paths or NodePaths()
    runtime = runtime_name(config)
    flow_names = [f.name for f in all_flows(config)]
    board, current, problems = _read_os(paths)
    next_os, next_source, next_known = _next_os(paths, current, flow_names)
    kube_version, kube_source = _kubernetes(config)
    wanted, mapping_source = _wanted(config, paths, kube_version, flow_names)
    if config.runtime.backend == "sysext":
        current_verdict, next_view, stores, sysext_problems = _sysext_view(
            config, paths, board, current, next_os, kube_version, wanted, mapping_source)
        return _status(config, paths, units, flow_names, problems + sysext_problems, board=board, current_os=current,
                       next_os=next_os, next_source=next_source, kube_version=kube_version, kube_source=kube_source,
                       runtime=runtime, wanted=tuple(wanted), mapping_source=mapping_source, booted=None,
                       next_profile="-", next_profile_source="the sysext backend uses no torcx profile",
                       profiles={}, stores=tuple(stores), reset_pending=_reset_pending(paths),
                       current=current_verdict, next=_next_verdict(current_verdict, next_view, current, next_os,
                                                                   next_source, next_known))
    profiles, profile_problems = _profiles(paths)
    profile_name, profile_source, reference, profile_problem = _selected(paths, runtime)
    stores = _stores(paths, current)
    try:
        booted = profile.booted_reference(paths.torcx_metadata, runtime)
    except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
        booted, problems = None, [*problems, str(err)]
    cache = ManifestCache(paths.cache_dir)
    selection = Selection(runtime, profile_name, reference, profile_problem, kube_version, tuple(wanted),
                          mapping_source)

    def verdict_of(os_version: str | None) -> Verdict:
        return _verdict_for(os_version, selection, stores, current, cache, board, check_hashes)

    current_verdict = verdict_of(current)
    reset = _reset_pending(paths)
    if reset is not None:
        current_verdict = dataclasses.replace(current_verdict, notes=(
            f"{runtime} changes at the next boot ({reset}): {paths.docker_data} is emptied before it starts",))
    if booted is not None and booted != reference:
        current_verdict = dataclasses.replace(current_verdict, notes=(
            *current_verdict.notes, f"{runtime} {booted} runs now; the next boot applies {reference}"))
    next_verdict = _next_verdict(current_verdict, verdict_of(next_os) if next_os is not None else None, current,
                                 next_os, next_source, next_known)
    return _status(config, paths, units, flow_names, problems + profile_problems, board=board, current_os=current,
                   next_os=next_os, next_source=next_source, kube_version=kube_version, kube_source=kube_source,
                   runtime=runtime, wanted=tuple(wanted), mapping_source=mapping_source, booted=booted,
                   next_profile=profile_name, next_profile_source=profile_source, profiles=profiles,
                   stores=tuple(stores), reset_pending=reset, current=current_verdict, next=next_verdict)


def _next_verdict(current_verdict: Verdict, next_view: Verdict | None, current: str | None, next_os: str | None,
                  next_source: str, next_known: bool) -> Verdict:
    """The next boot's verdict: the next OS's, the running OS's again, or unknown."""
    if next_os is not None and next_view is not None:
        return next_view
    if next_known:
        return dataclasses.replace(current_verdict, notes=(f"no OS update pending: the next boot runs OS {current} "
                                                           "again",))
    return Verdict(None, False, None, next_source)


def _status(config: Config, paths: NodePaths, units: Callable[[Sequence[str]], dict[str, str]],
            flow_names: Sequence[str], problems: list[str], **facts: Any) -> Status:
    """The status, with each flow's last run and the path units."""
    flows = []
    for name in flow_names:
        try:
            run = load_run(paths, name)
        except TorcxTectonicError as err:
            problems.append(str(err))
            run = None
        flows.append(FlowStatus(name, run, FlowState(paths, name).this_boot(run)))
    return Status(backend=config.runtime.backend, flows=tuple(flows), path_units=units(path_units(config)),
                  problems=tuple(problems), **facts)
