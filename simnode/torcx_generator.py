#!/usr/bin/python3
"""Stand-in for torcx's boot-time generator, run inside a simulated Container Linux node.

Why it exists: the product only prepares what torcx applies at the next boot
(addons in the stores, a profile, next-profile); torcx itself, a Go program
shipped in the OS image, cannot be built or fetched here. Without it nothing
in a test node would say which Docker booted, so the Docker reset could not
compare its marker with what booted and ``status`` could not say what runs.
This script, installed as ``/usr/lib/systemd/system-generators/torcx-generator``
as on Container Linux, does what the real one does at boot, as its
documentation and the platform notes describe it:

- the profile named in ``/etc/torcx/next-profile`` (a ``.json`` suffix
  trimmed; ``vendor`` when the file is missing or empty) is the upper profile,
  looked up in ``/usr/share/torcx/profiles``, ``/usr/share/oem/torcx/profiles``
  and ``/etc/torcx/profiles`` (the last one found wins); ``vendor`` (and
  ``oem`` when the OEM ships it) are the lower profiles; images merge by name,
  the upper profile's reference winning;
- each image's archive ``<name>:<reference>.torcx.tgz`` is taken from the
  first store that has it: vendor, OEM versioned, OEM, user versioned (the
  booting OS's ``VERSION_ID`` only), user;
- it is unpacked under ``/run/torcx/unpack/<name>``, the binaries its
  ``.torcx/manifest.json`` lists are linked into ``/run/torcx/bin`` and its
  units copied into ``/run/systemd/system`` (never overwriting);
- only when every image applied: the merged profile is written to
  ``/run/torcx/profile.json`` and the seal ``/run/metadata/torcx``
  (``KEY="value"`` lines). A failed image leaves no seal, as torcx's failed
  apply does; a seal already there (a daemon-reload) means done.

It is test infrastructure (stdlib only, the node's ``python3``), not part of
the product.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

RUN_DIR = Path("/run/torcx")
SEAL = Path("/run/metadata/torcx")
SYSTEMD_RUNTIME_UNITS = Path("/run/systemd/system")
PROFILE_DIRS = (Path("/usr/share/torcx/profiles"), Path("/usr/share/oem/torcx/profiles"), Path("/etc/torcx/profiles"))
NEXT_PROFILE = Path("/etc/torcx/next-profile")
PROFILE_KINDS = ("profile-manifest-v0", "profile-manifest-v1")


class ApplyError(Exception):
    """What keeps the profile from being applied (torcx then seals nothing)."""


def say(message: str) -> None:
    sys.stderr.write(f"torcx-generator (test stand-in): {message}\n")


def os_version_id() -> str:
    for line in Path("/usr/lib/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_ID":
            return value.strip().strip('"')
    raise ApplyError('unable to parse "VERSION_ID" from os-release')


def store_paths(version: str) -> list[Path]:
    return [Path("/usr/share/torcx/store"), Path(f"/usr/share/oem/torcx/store/{version}"),
            Path("/usr/share/oem/torcx/store"), Path(f"/var/lib/torcx/store/{version}"), Path("/var/lib/torcx/store")]


def next_profile_name() -> str:
    try:
        name = NEXT_PROFILE.read_text().strip()
    except FileNotFoundError:
        name = ""
    return name.removesuffix(".json") or "vendor"


def profile_images(name: str) -> list[dict[str, str]]:
    """The images of the profile called ``name`` (an empty file is an empty profile)."""
    found = [d / f"{name}.json" for d in PROFILE_DIRS if (d / f"{name}.json").is_file()]
    if not found:
        raise ApplyError(f"profile {name!r} not found in {', '.join(map(str, PROFILE_DIRS))}")
    text = found[-1].read_text()
    if not text.strip():
        return []
    document = json.loads(text)
    if document.get("kind") not in PROFILE_KINDS:
        raise ApplyError(f"{found[-1]}: unknown profile kind {document.get('kind')!r}")
    images = (document.get("value") or {}).get("images") or []
    return [{"name": image["name"], "reference": image["reference"]} for image in images]


def merged_images(lower: list[str], upper: str) -> list[dict[str, str]]:
    by_name: dict[str, dict[str, str]] = {}
    for name in (*lower, upper):
        for image in profile_images(name):
            by_name[image["name"]] = image
    return list(by_name.values())


def archive_for(image: dict[str, str], stores: list[Path]) -> Path:
    filename = f"{image['name']}:{image['reference']}.torcx.tgz"
    for store in stores:
        if (store / filename).is_file():
            return store / filename
    raise ApplyError(f"image {image['name']}:{image['reference']} not found in any store "
                     f"({', '.join(map(str, stores))})")


def apply_image(image: dict[str, str], archive: Path) -> None:
    root = RUN_DIR / "unpack" / image["name"]
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:  # the node's Python predates tarfile's extraction filters
            parts = Path(member.name).parts
            if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
                raise ApplyError(f"{archive}: member {member.name!r} is not a plain file or directory inside it")
        tar.extractall(root, members=members)
    manifest_path = root / ".torcx/manifest.json"
    assets = json.loads(manifest_path.read_text())["value"] if manifest_path.is_file() else {}
    bindir = RUN_DIR / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for binary in assets.get("bin") or []:
        target = bindir / Path(binary).name
        if not target.exists():
            target.symlink_to(root / binary.lstrip("/"))
    SYSTEMD_RUNTIME_UNITS.mkdir(parents=True, exist_ok=True)
    for unit in assets.get("units") or []:
        target = SYSTEMD_RUNTIME_UNITS / Path(unit).name
        if not target.exists():
            shutil.copyfile(root / unit.lstrip("/"), target)
    say(f"applied {image['name']}:{image['reference']} from {archive}")


def main() -> int:
    if SEAL.exists():
        return 0  # applied at this boot already (a daemon-reload runs generators again)
    try:
        version = os_version_id()
        upper = next_profile_name()
        lower = ["vendor"] + (["oem"] if Path("/usr/share/oem/torcx/profiles/oem.json").is_file() else [])
        images = merged_images(lower, upper)
        stores = store_paths(version)
        failed = []
        for image in images:
            try:
                apply_image(image, archive_for(image, stores))
            except (ApplyError, OSError, tarfile.TarError, ValueError) as err:
                say(f"error: {err}")
                failed.append(image)
        if failed:
            raise ApplyError(f"failed to install {len(failed)} images")
    except (ApplyError, OSError, ValueError) as err:  # ValueError: JSON
        say(f"apply failed: {err}; nothing sealed")
        return 1
    profile = RUN_DIR / "profile.json"
    applied = {"kind": "profile-manifest-v0", "value": {"images": images or None}}  # torcx writes null for none
    profile.write_text(json.dumps(applied, indent=2) + "\n")
    profile.chmod(0o444)
    SEAL.parent.mkdir(parents=True, exist_ok=True)
    SEAL.write_text("".join(f'{key}="{value}"\n' for key, value in (
        ("TORCX_LOWER_PROFILES", ":".join(lower)), ("TORCX_UPPER_PROFILE", upper),
        ("TORCX_PROFILE_PATH", str(profile)), ("TORCX_BINDIR", str(RUN_DIR / "bin")),
        ("TORCX_UNPACKDIR", str(RUN_DIR / "unpack")))))
    say(f"profile {upper} applied and sealed in {SEAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
