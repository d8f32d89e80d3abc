"""The torcx backend: what torcx applies at boot, read from its stores and
profiles, and the verdict for each OS version.

torcx unpacks, at every boot, the image the next profile selects from the
first store that has it: the OS's own vendor store, the OEM stores, then the
user store of that OS version and the unversioned one. ``verdict`` is a pure
function of what that search finds; ``TorcxBackend`` gathers the facts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import NothingToRollBack, TorcxTectonicError
from ..node import dockerdata
from ..node.osrelease import parse_os_version
from ..paths import NodePaths
from ..state import ManifestCache, RolledBack, RuntimeChange
from ..steps.addons import select
from ..strategy import ADDON_EPOCH, supports_addons
from ..verdict import Facts, RuntimeView, Verdict
from . import profile, store
from .manifest import PackageList, file_digest, parse_package_list

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


class TorcxBackend:
    """Docker from torcx addons: the stores and profiles the steps keep."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.runtime = config.torcx.addon

    def booted(self, paths: NodePaths) -> str | None:
        """The runtime version torcx unpacked at this boot (its metadata)."""
        return profile.booted_reference(paths.torcx_metadata, self.runtime)

    def leftovers(self, paths: NodePaths) -> list[Path]:
        """Remove the stores an interrupted GC moved aside."""
        return store.remove_trash(paths.user_store)

    def view(self, paths: NodePaths, facts: Facts, *, check_hashes: bool = True) -> RuntimeView:
        runtime = self.runtime
        problems: list[str] = []
        profiles, profile_problems = _profiles(paths)
        profile_name, profile_source, reference, profile_problem = _selected(paths, runtime)
        stores = _stores(paths, facts.current_os)
        try:
            booted = self.booted(paths)
        except (TorcxTectonicError, OSError, UnicodeDecodeError) as err:
            booted, problems = None, [str(err)]
        cache = ManifestCache(paths.cache_dir)
        selection = Selection(runtime, profile_name, reference, profile_problem, facts.kube_version, facts.wanted,
                              facts.mapping_source)

        def verdict_of(os_version: str | None) -> Verdict:
            return _verdict_for(os_version, selection, stores, facts.current_os, cache, facts.board, check_hashes)

        current = verdict_of(facts.current_os)
        if facts.reset_pending is not None:
            current = dataclasses.replace(current, notes=(
                f"{runtime} changes at the next boot ({facts.reset_pending}): {paths.docker_data} is emptied "
                "before it starts",))
        if booted is not None and booted != reference:
            current = dataclasses.replace(current, notes=(
                *current.notes, f"{runtime} {booted} runs now; the next boot applies {reference}"))
        upcoming = verdict_of(facts.next_os) if facts.next_os is not None else None
        return RuntimeView(
            current=current, next=upcoming, booted=booted,
            booted_source=f"torcx's {paths.on_node(paths.torcx_metadata)}" if booted is not None
            else f"unknown (torcx left no {paths.on_node(paths.torcx_metadata)})",
            sections=(("profiles", _profile_lines(profile_name, profile_source, profiles)),
                      ("stores", _store_lines(stores))),
            document={"profiles": {"next": profile_name, "next_source": profile_source,
                                   **{kind: {name: list(images) for name, images in found.items()}
                                      for kind, found in profiles.items()}},
                      "stores": [dataclasses.asdict(item) for item in stores]},
            problems=(*problems, *profile_problems))

    def roll_back(self, paths: NodePaths, facts: Facts, change: RuntimeChange) -> RolledBack:
        """Select ``change.previous`` again in the next profile, once every OS
        version that boots next finds its addon in a store torcx reads (the
        GC keeps the versioned stores of the running OS and later ones)."""
        runtime, target = self.runtime, change.previous
        name, _, reference, problem = _selected(paths, runtime)
        if problem is not None:
            raise NothingToRollBack(f"the next profile cannot be read: {problem}")
        if target is None or target == reference:
            raise NothingToRollBack(f"profile {name} already selects {runtime}:{reference}" if target else
                                    f"{runtime} {change.version} replaced the OS's own")
        stores = _stores(paths, facts.current_os)
        wanted = Selection(runtime, name, target, None, None, (), "")
        found, missing = [], []
        for os_version in dict.fromkeys(v for v in (facts.next_os, facts.current_os) if v):
            location, _, searched = _locate(os_version, wanted, stores, facts.current_os, None, False)
            if location is None:
                missing.append(f"OS {os_version} finds it in none of {', '.join(searched)}")
            else:
                found.append(f"{location} (OS {os_version})")
        if missing or not found:
            raise NothingToRollBack(f"{runtime}:{target}, which ran before {change.version}, is no longer kept: "
                                    f"{'; '.join(missing) or 'the running OS version is not known'}")
        select(paths, self.config, target)
        pending = dockerdata.pending(paths.docker_reset_marker)
        return RolledBack(runtime=runtime, previous=reference, version=target, found=tuple(found),
                          reset=f"{pending[0]} → {pending[1]}" if pending else None, activated="at the next boot")


def _profile_lines(name: str, source: str, profiles: dict[str, dict[str, tuple[str, ...]]]) -> tuple[str, ...]:
    lines = [f"  next:           {name} ({source})"]
    for kind in ("user", "vendor"):
        for found, images in sorted(profiles.get(kind, {}).items()):
            lines.append(f"  {kind + ' ' + found + ':':15} {', '.join(images) or '(no images)'}")
    return tuple(lines)


def _store_lines(stores: Sequence[Store]) -> tuple[str, ...]:
    lines = []
    for item in stores:
        label = f"{item.kind}{' ' + item.os if item.os else ''}"
        if not item.addons:
            lines.append(f"  {label + ':':15} {item.path} (no addons)")
        for addon in item.addons:
            state = f", {addon.hash}" if addon.hash else ""
            lines.append(f"  {label + ':':15} {addon.name}:{addon.reference} ({addon.size} bytes{state}) "
                         f"{addon.path}")
    return tuple(lines)

