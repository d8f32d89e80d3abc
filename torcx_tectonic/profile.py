"""torcx profiles: read, change and select them.

Profiles are JSON documents (``profile-manifest-v0`` or ``-v1``); a profile
keeps the kind it already has. The profile applied at next boot is named in
``/etc/torcx/next-profile``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic import write_if_changed
from .errors import InputError
from .manifest import check_name

PROFILE_KINDS = ("profile-manifest-v0", "profile-manifest-v1")
VENDOR_PROFILE = "vendor"


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
    try:
        document = json.loads(text)
    except ValueError as err:
        raise InputError(f"{origin}: not valid JSON: {err}") from None
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in PROFILE_KINDS:
        raise InputError(f"{origin}: kind is {kind!r}; expected one of {', '.join(PROFILE_KINDS)}")
    value = document.get("value")
    raw_images = value.get("images") if isinstance(value, dict) else None
    if not isinstance(raw_images, list):
        raise InputError(f"{origin}: expected value.images to be a list")
    images = []
    for i, raw in enumerate(raw_images):
        where = f"{origin}: value.images[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(
            raw.get("reference"), str
        ):
            raise InputError(f"{where}: expected an object with string 'name' and 'reference'")
        remote = raw.get("remote")
        if remote is not None and (kind == PROFILE_KINDS[0] or not isinstance(remote, str)):
            raise InputError(f"{where}: 'remote' is only allowed as a string in {PROFILE_KINDS[1]}")
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
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not name:
        return None
    check_name(name, "profile name", str(path))
    return name


def load_profile(directory: Path, name: str) -> Profile | None:
    path = directory / f"{check_name(name, 'profile name', str(directory))}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_profile(text, str(path))


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
    profile_path = user_profiles / f"{profile_name}.json"
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
    from .envfile import parse_env

    try:
        values = parse_env(metadata.read_text(), str(metadata))
    except FileNotFoundError:
        return None
    applied = values.get("TORCX_PROFILE_PATH")
    if not applied:
        return None
    try:
        return selected_reference(parse_profile(Path(applied).read_text(), applied), name)
    except FileNotFoundError:
        return None
