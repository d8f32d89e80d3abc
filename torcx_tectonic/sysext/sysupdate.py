"""systemd-sysupdate transfers: who else moves an extension's link.

The sysext-bakery ships a systemd-sysupdate transfer beside each image
(``/etc/sysupdate.kubernetes.d/kubernetes-v1.30.conf``, say): its
``[Target]`` names the directory the images go to (``Path=/opt/extensions/
kubernetes``) and the link it moves (``CurrentSymlink=/etc/extensions/
kubernetes.raw``), and ``systemd-sysupdate.timer`` runs it. Two agents must
never move the same link, so an image such a transfer manages is left to
systemd-sysupdate: this module finds the transfer, the steps refuse to touch
the image and the status says who decides. Transfers are read with the
configuration's strict INI reader; one that cannot be read is an error
naming it (it might manage the image).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ..config import iter_ini
from ..edges.inputfile import read_text
from ..errors import ConfigError, InputError
from ..paths import NodePaths

TIMER = "systemd-sysupdate.timer"
TARGET = "Target"
#: The [Target] keys that name what a transfer writes: the link it moves, the directory of its images.
TARGET_KEYS = ("CurrentSymlink", "Path")


@dataclass(frozen=True)
class Transfer:
    """A transfer that manages an image, and whether its timer runs it."""

    path: str
    timer_enabled: bool

    def describe(self) -> str:
        return f"managed by systemd-sysupdate (transfer {self.path}, {TIMER} " \
               f"{'enabled' if self.timer_enabled else 'not enabled'})"

    def refusal(self, name: str, link: str) -> str:
        """Why the image is not ours, and how to hand it over."""
        return (f"the {name} image is {self.describe()}: torcx-tectonic leaves {link} alone, so that two agents "
                f"never move it; to hand the image over, remove {self.path} (and `systemctl disable --now {TIMER}` "
                "when no other transfer needs it)")


def manages(text: str, origin: str, link: str, store: str) -> bool:
    """Whether the transfer ``text`` writes ``link`` or into ``store`` (paths as the node names them)."""
    try:
        found = [value for section, key, value, _ in iter_ini(text, origin) if section == TARGET and key in TARGET_KEYS]
    except ConfigError as err:
        raise InputError(f"{err}; expected a systemd-sysupdate transfer (it might manage {link})") from None
    wanted = {posixpath.normpath(link), posixpath.normpath(store)}
    return any(value.startswith("/") and posixpath.normpath(value) in wanted for value in found)


def transfer_files(paths: NodePaths) -> list[Path]:
    """Every transfer file systemd-sysupdate would read, in a stable order."""
    found: list[Path] = []
    for directory in paths.sysupdate_dirs:
        for pattern in ("sysupdate.d/*.conf", "sysupdate.*.d/*.conf"):
            found += sorted(directory.glob(pattern))
    return found


def timer_enabled(paths: NodePaths) -> bool:
    """Whether systemd-sysupdate.timer is enabled (a .wants link in /etc)."""
    return any(os.path.lexists(wants / TIMER) for wants in paths.enabled_units_dir.glob("*.wants"))


def owner(paths: NodePaths, name: str) -> Transfer | None:
    """The transfer that manages the image ``name`` (None: no transfer does)."""
    link, store = paths.on_node(paths.extension_link(name)), paths.on_node(paths.image_store / name)
    for path in transfer_files(paths):
        if manages(read_text(path, "a systemd-sysupdate transfer"), paths.on_node(path), link, store):
            return Transfer(paths.on_node(path), timer_enabled(paths))
    return None
