"""torcx profiles: read, change and select them.

Profiles are JSON documents (``profile-manifest-v0`` or ``-v1``); a profile
keeps the kind it already has. The profile applied at next boot is named in
``/etc/torcx/next-profile``.

What torcx itself writes and accepts is read the same way here: ``"images":
null`` (the run profile it seals when it applied nothing) and an empty file
are empty profiles; ``remote`` on a v0 image, which torcx ignores, is
ignored too and so not written back when the profile is rewritten (v0 has no
such field; only v1 profiles carry remotes); a ``.json`` suffix in
next-profile is trimmed, as torcx does, so the same profile file is updated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..edges.atomic import write_if_changed
from ..edges.envfile import parse_env
from ..edges.inputfile import parse_json, read_text_if_exists
from ..errors import InputError, shown
from .manifest import check_name

PROFILE_KINDS = ("profile-manifest-v0", "profile-manifest-v1")
PROFILE_SUFFIX = ".json"
VENDOR_PROFILE = "vendor"
#: next-profile holds one name.
MAX_NAME_FILE_BYTES = 4096
_MISSING = object()


@dataclass(frozen=True)
class Image:
    name: str
    reference: str
    remote: str | None = None


@dataclass(frozen=True)
class Profile:
    kind: str
    images: tuple[Image, ...]


def parse_profile(text: str, origin: str) -> Profile:
    if not text.strip():  # torcx treats an empty profile file as an empty profile
        return Profile(kind=PROFILE_KINDS[0], images=())
    document = parse_json(text, origin, f"a torcx profile ({' or '.join(PROFILE_KINDS)})")
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in PROFILE_KINDS:
        raise InputError(f"{origin}: kind is {shown(kind)}; expected one of {', '.join(PROFILE_KINDS)}")
    value = document.get("value")
    raw_images = value.get("images", _MISSING) if isinstance(value, dict) else _MISSING
    if raw_images is None:  # what torcx writes when it applied nothing
        raw_images = []
    if not isinstance(raw_images, list):
        raise InputError(f"{origin}: expected value.images to be a list")
    images = []
    for i, raw in enumerate(raw_images):
        where = f"{origin}: value.images[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(
            raw.get("reference"), str
        ):
            raise InputError(f"{where}: expected an object with string 'name' and 'reference'")
        remote = raw.get("remote") if kind == PROFILE_KINDS[1] else None  # v0 has none; torcx ignores it there
        if remote is not None and not isinstance(remote, str):
            raise InputError(f"{where}: 'remote' is {shown(remote)}; expected a string")
        images.append(Image(name=raw["name"], reference=raw["reference"], remote=remote or None))
    return Profile(kind=kind, images=tuple(images))


def render_profile(profile: Profile) -> str:
    images = []
    for image in profile.images:
        entry = {"name": image.name, "reference": image.reference}
        if image.remote is not None:
            entry["remote"] = image.remote
        images.append(entry)
    return json.dumps({"kind": profile.kind, "value": {"images": images}}, indent=2) + "\n"


def with_image(profile: Profile | None, name: str, reference: str) -> Profile:
    """The profile selecting ``name:reference``, replacing an older reference
    of the same name in place (other images keep their order)."""
    base = profile or Profile(kind=PROFILE_KINDS[0], images=())
    image = Image(name=name, reference=reference)
    if any(i.name == name for i in base.images):
        images = tuple(image if i.name == name else i for i in base.images)
    else:
        images = (*base.images, image)
    return replace(base, images=images)


def target_profile_name(next_profile: str | None, configured: str) -> str:
    """A non-vendor profile already set as next is updated; otherwise the
    configured profile is created."""
    if next_profile and next_profile != VENDOR_PROFILE:
        return next_profile
    return configured


def read_next_profile(path: Path) -> str | None:
    """The profile named in next-profile, as torcx reads it: whitespace and
    a ``.json`` suffix trimmed (``tectonic.json`` names ``tectonic``)."""
    text = read_text_if_exists(path, "the name of a torcx profile", limit=MAX_NAME_FILE_BYTES)
    name = (text or "").strip().removesuffix(PROFILE_SUFFIX)
    return check_name(name, "profile name", str(path)) if name else None


def load_profile(directory: Path, name: str) -> Profile | None:
    path = directory / f"{check_name(name, 'profile name', str(directory))}{PROFILE_SUFFIX}"
    text = read_text_if_exists(path, "a torcx profile")
    return None if text is None else parse_profile(text, str(path))


def select_image(
    *, user_profiles: Path, vendor_profiles: Path, next_profile_file: Path, configured: str, name: str, reference: str
) -> tuple[str, list[Path]]:
    """Make the next profile select ``name:reference``.

    Returns the profile name and the files actually rewritten (none when the
    node already had it), so a second run changes nothing.
    """
    profile_name = target_profile_name(read_next_profile(next_profile_file), configured)
    current = load_profile(user_profiles, profile_name)
    if current is None and profile_name != configured:
        current = load_profile(vendor_profiles, profile_name)
    updated = with_image(current, name, reference)
    changed = []
    profile_path = user_profiles / f"{profile_name}{PROFILE_SUFFIX}"
    if (current != updated or not profile_path.exists()) and write_if_changed(profile_path, render_profile(updated)):
        changed.append(profile_path)
    if write_if_changed(next_profile_file, profile_name + "\n"):
        changed.append(next_profile_file)
    return profile_name, changed


def selected_reference(profile: Profile | None, name: str) -> str | None:
    if profile is None:
        return None
    return next((i.reference for i in profile.images if i.name == name), None)


def booted_reference(metadata: Path, name: str) -> str | None:
    """The reference of ``name`` that torcx applied at this boot, from
    /run/metadata/torcx (None when torcx left no record)."""
    text = read_text_if_exists(metadata, "torcx's boot metadata (KEY=value lines)")
    applied = parse_env(text, str(metadata)).get("TORCX_PROFILE_PATH") if text is not None else None
    if not applied:
        return None
    if not applied.startswith("/"):
        raise InputError(f"{metadata}: TORCX_PROFILE_PATH {shown(applied)} is not an absolute path")
    profile_text = read_text_if_exists(Path(applied), "the profile torcx applied at boot")
    return None if profile_text is None else selected_reference(parse_profile(profile_text, applied), name)
