"""A Flatcar node without Python, that merges system extensions as Flatcar does.

What makes a :class:`~simnode.node.Node` Flatcar-like here:

- os-release with ``ID=flatcar`` and ``SYSEXT_LEVEL=1.0`` (``os_flavor``);
- ``systemd-sysext.service`` enabled, and a stand-in for Flatcar's
  ``ensure-sysext.service``: releases that merge extensions in the booted
  system (up to the one from 2026 that merges them in the initrd) reload the
  manager right after the merge and restart ``multi-user.target`` (with
  sockets and timers), so units and drop-ins from the images take part in
  the boot;
- no Python: the interpreter, its standard library and the distribution's
  Python packages are hidden from ``/usr`` with overlayfs whiteouts;
- loop devices: a ``.raw`` image is mounted through a loop device, so the
  container gets the host's ``/dev/loop-control`` and device nodes for loop
  devices (the kernel hands out whichever is free; the host's own nodes come
  and go, as systemd removes the loop devices it allocated once done).

The update_engine stand-in is test equipment written in Python; it runs on
the host's interpreter, bound read-only at :data:`HOST_USR` (outside ``/usr``
and ``PATH``), and the product's units are denied that directory, so no step
of the product could use it even by accident.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .node import UPDATE_ENGINE_DIR, Node

#: Loop devices the node can use at the same time (the kernel gives out the lowest free one).
LOOP_DEVICES = 64
#: Where the host's /usr appears in the node, for the update_engine stand-in only.
HOST_USR = "/run/simnode/host-usr"

#: An image's extension-release that every Flatcar release of SYSEXT_LEVEL 1.0 merges.
LEVELLED = "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n"

#: Flatcar's own units for system extensions (the OS's, not the product's).
ENSURE_SYSEXT_UNIT = """\
# Stand-in for Flatcar's ensure-sysext.service (same behaviour): after
# systemd-sysext merged the images, reload the manager so their units and
# drop-ins load (generators run again), and restart the targets that pull in
# enabled units, so those of the images start in this boot.
[Unit]
BindsTo=systemd-sysext.service
After=systemd-sysext.service
DefaultDependencies=no
ConditionDirectoryNotEmpty=|/etc/extensions
ConditionDirectoryNotEmpty=|/run/extensions
ConditionDirectoryNotEmpty=|/var/lib/extensions

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemctl daemon-reload
ExecStart=/usr/bin/systemctl restart --no-block sockets.target timers.target multi-user.target
"""

UPDATE_ENGINE_ON_HOST_PYTHON = f"""\
# Test equipment: the stand-in runs on the host's interpreter; the node has none.
[Service]
ExecStart=
ExecStart={HOST_USR}/bin/python3 {UPDATE_ENGINE_DIR}/update_engine.py
"""

NO_HOST_PYTHON = """\
# Test equipment: the product's units cannot reach the stand-in's interpreter.
[Service]
InaccessiblePaths=/run/simnode
"""

#: Everything of Python in a Debian /usr: interpreters, standard library, packages, libpython.
PYTHON_PATTERNS = (
    "/usr/bin/python3*", "/usr/bin/pydoc3*", "/usr/bin/pygettext3*", "/usr/lib/python3*",
    "/usr/local/bin/python3*", "/usr/local/lib/python3*", "/usr/lib/*-linux-gnu/libpython3*",
)


def container_linux_files() -> dict[str, bytes | str]:
    """What a Container Linux node without Python needs beyond a Container
    Linux one (for ``Node(files=)``, with ``nspawn_args()`` and
    ``torcx_on_host_python``): the update_engine stand-in on the host's
    interpreter, which the product's units cannot reach."""
    return {
        "/usr/lib/systemd/system/update-engine.service.d/50-host-python.conf": UPDATE_ENGINE_ON_HOST_PYTHON,
        "/etc/systemd/system/torcx-.service.d/50-no-host-python.conf": NO_HOST_PYTHON,
    }


def torcx_on_host_python(node: Node) -> None:
    """The stand-in for torcx's generator, on the host's interpreter (the node has none)."""
    generator = node.layer / "usr/lib/systemd/system-generators/torcx-generator"
    body = generator.read_text().split("\n", 1)[1]
    generator.write_text(f"#!{HOST_USR}/bin/python3 -I\n{body}")
    generator.chmod(0o755)


def python_paths(patterns: Iterable[str] = PYTHON_PATTERNS) -> list[str]:
    """The host's /usr paths that hold Python (what the node must not see)."""
    return sorted({path for pattern in patterns for path in glob.glob(pattern)})


def node_files() -> dict[str, bytes | str]:
    """Files a Flatcar-like node has beyond a Container Linux one (for ``Node(files=)``)."""
    return {
        "/usr/lib/systemd/system/ensure-sysext.service": ENSURE_SYSEXT_UNIT,
        "/usr/lib/systemd/system/update-engine.service.d/50-host-python.conf": UPDATE_ENGINE_ON_HOST_PYTHON,
        "/etc/systemd/system/torcx-.service.d/50-no-host-python.conf": NO_HOST_PYTHON,
        "/usr/lib/tmpfiles.d/simnode-loop-devices.conf": loop_device_nodes(),
    }


def enable_sysext(node: Node) -> None:
    """Enable systemd-sysext and ensure-sysext the way Flatcar does: links in /usr."""
    wants = node.layer / "usr/lib/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-sysext.service", "ensure-sysext.service"):
        (wants / unit).symlink_to(f"../{unit}")


def loop_device_nodes(count: int = LOOP_DEVICES) -> str:
    """tmpfiles.d lines for the nodes of loop devices 0..count-1 in the container's /dev
    (a tmpfs of nspawn's): created at boot by systemd-tmpfiles-setup-dev, before the merge."""
    return "".join(f"b /dev/loop{n} 0660 root disk - 7:{n}\n" for n in range(count))


def nspawn_args() -> list[str]:
    """What a Flatcar-like node adds to the nspawn command line."""
    return ["--bind=/dev/loop-control", f"--bind-ro=/usr:{HOST_USR}"]


def attached_loops(image: Path) -> list[str]:
    """Loop devices (host names) whose backing file is ``image`` (by device and inode:
    inside a container, the backing path is the container's)."""
    st = os.stat(image)
    out = subprocess.run(["losetup", "--list", "--json", "--output", "NAME,BACK-INO,BACK-MAJ:MIN"],
                         check=True, capture_output=True, text=True).stdout
    found = []
    for device in json.loads(out or '{"loopdevices": []}').get("loopdevices", []):
        majmin = device.get("back-maj:min") or ""
        if str(device.get("back-ino")) == str(st.st_ino) and majmin == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}":
            found.append(device["name"])
    return found


def detach(devices: Iterable[str]) -> None:
    for device in devices:
        subprocess.run(["losetup", "--detach", device], check=False, capture_output=True)
