"""A root with no C library and no dynamic loader but the program's own.

The system extension's program brings its interpreter, C library and loader
(``make sysext``); the way to show it needs nothing else of the node is to
run it where nothing else is: a root holding only the image's ``/usr``
(read-only) and the node's ``/etc``, ``/proc``, ``/dev``, ``/run`` and
``/var``. Each command runs in a mount namespace of its own (``unshare``),
so the mounts vanish with it and the host's mounts are never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Mounts the root, then becomes the command inside it. Positional: chroot's
#: path, the empty mount point, the image's usr, the node's etc, run and var,
#: then the command.
SETUP = r"""
set -e
chroot=$1 root=$2 usr=$3 etc=$4 run=$5 var=$6
shift 6
mount -t tmpfs -o mode=0755 tmpfs "$root"
mkdir "$root/usr" "$root/etc" "$root/proc" "$root/dev" "$root/run" "$root/var"
mount --bind "$usr" "$root/usr" && mount -o remount,bind,ro "$root/usr"
mount --bind "$etc" "$root/etc" && mount -o remount,bind,ro "$root/etc"
mount --rbind /proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$run" "$root/run"
mount --bind "$var" "$root/var"
unset PWD OLDPWD  # the shell's own: the command gets the caller's environment
exec "$chroot" "$root" "$@"
"""


def missing_tools() -> str | None:
    """Why a bare root cannot be made here, or None."""
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
            return f"{tool} is not installed"
    return None


@dataclass(frozen=True)
class BareRoot:
    """The parts of a bare root (host directories) and how to run a command in it."""

    mountpoint: Path
    usr: Path
    etc: Path
    run_dir: Path
    var: Path

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the root (paths as the root sees them), its output captured."""
        chroot = shutil.which("chroot", path="/usr/sbin:/sbin:/usr/bin:/bin") or "chroot"
        command = ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", SETUP, "sh", chroot,
                   str(self.mountpoint), str(self.usr), str(self.etc), str(self.run_dir), str(self.var), *argv]
        return subprocess.run(command, env=dict(env or {"PATH": "/usr/bin:/bin"}), capture_output=True, text=True,
                              timeout=timeout, check=False)


#: What a node's /etc holds for the program to work on here: a Flatcar os-release
#: and a kubelet.env, which the new-kubelet flow's first step reads.
KUBELET_ENV = "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\n"


def node_etc(directory: Path, os_version: str) -> Path:
    """A node's /etc in ``directory`` (made): the few files the program reads."""
    files = {"os-release": f"ID=flatcar\nVERSION_ID={os_version}\nVERSION={os_version}\nFLATCAR_BOARD=amd64-usr\n",
             "kubernetes/kubelet.env": KUBELET_ENV}
    for path, text in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(text)
    return directory


def bare_root(directory: Path, usr: Path, etc: Path) -> BareRoot:
    """A bare root whose writable /run and /var are fresh directories under ``directory``."""
    parts = {name: directory / name for name in ("mountpoint", "run", "var")}
    for path in parts.values():
        path.mkdir(parents=True)
    return BareRoot(parts["mountpoint"], usr, etc, parts["run"], parts["var"])
