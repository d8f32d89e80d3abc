"""A simulated Container Linux node: a real systemd booted in ``systemd-nspawn``.

Why: the product is a systemd generator plus units that talk to
update_engine over the system D-Bus, restart docker/kubelet and survive
reboots.  Mocks would only test our beliefs about systemd; booting a real
systemd 252 with a real ``dbus-daemon`` and ``journald`` tests the product
as it runs.  A boot takes well under a second, so every integration test can
have a fresh node.

How a node is built (everything below one temporary directory):

- ``root/``: the container's root directory.  ``/etc`` is a copy of the
  host's (minus its enablement symlinks, so only what a test enables runs)
  plus the bundle's ``etc/``; ``/var`` starts empty.  ``/etc`` and ``/var``
  are therefore plain host directories a test can read and write.
- ``/usr`` is a read-only overlay of three lower layers; the right-most
  ``--overlay-ro`` source wins (checked on this machine), so the order is
  host ``/usr`` (lowest), the product bundle's ``usr/``, then the per-test
  layer ``layer/usr`` (highest): Container Linux ``os-release``, the vendor
  torcx profile and store, the update_engine stand-in, the stand-in for
  torcx's boot-time generator (:mod:`simnode.torcx_generator`: it applies the
  next profile at every boot and seals ``/run/metadata/torcx``, so a test
  knows which Docker booted) and a ``kubelet`` stand-in.  ``/usr`` is
  read-only, as on Container Linux.
- ``/run`` and ``/tmp`` are tmpfs inside the container: only visible through
  :meth:`Node.run`.

Facts measured on the Debian 12 test VM (PID 1 is not systemd, no host bus):
``--register=no --keep-unit`` are required; ``systemd-nspawn`` exits 0 after
``poweroff`` and **133** after ``reboot`` inside; commands enter the
container with ``nsenter -t <pid 1 of the container> -a``; the container
shares the host network, so stand-in servers on the host's 127.0.0.1 are
reachable from inside.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .addons import addon_filename, build_addon
from .closing import Closing
from .update_engine import MARKER as UPDATE_MARKER
from .update_engine import STATE_DIR as UPDATE_STATE_DIR
from .update_engine import parse_scenario

#: ``systemd-nspawn`` exit status when the container asked to reboot.
REBOOT_EXIT_CODE = 133

VENDOR_PROFILE = {
    "kind": "profile-manifest-v0",
    "value": {"images": [{"name": "docker", "reference": "com.coreos.cl"}]},
}

UPDATE_ENGINE_DIR = "/usr/lib/fake-update-engine"
UPDATE_ENGINE_SCRIPT = Path(__file__).with_name("update_engine.py")
#: The stand-in for torcx's boot-time generator (Container Linux nodes only: Flatcar's sysext nodes have no torcx).
TORCX_GENERATOR_SCRIPT = Path(__file__).with_name("torcx_generator.py")

UPDATE_ENGINE_UNIT = f"""\
# Stand-in for Container Linux's update_engine (integration tests only).
[Unit]
Description=Update Engine (integration-test stand-in)
# Stop before the bus goes away, so a clean shutdown is a clean exit.
After=dbus.service

[Service]
Type=dbus
BusName=com.coreos.update1
Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
ExecStart=/usr/bin/python3 {UPDATE_ENGINE_DIR}/update_engine.py

[Install]
WantedBy=multi-user.target
"""

KUBELET_UNIT = """\
# Stand-in for the kubelet (integration tests only): it only has to run and
# to be restartable with the environment the product writes.
[Unit]
Description=Kubernetes Kubelet (integration-test stand-in)

[Service]
EnvironmentFile=/etc/kubernetes/kubelet.env
ExecStart=/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""

UPDATE_ENGINE_POLICY = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="com.coreos.update1"/>
    <allow send_destination="com.coreos.update1"/>
  </policy>
  <policy context="default">
    <allow send_destination="com.coreos.update1"/>
  </policy>
</busconfig>
"""

#: Container paths that are not backed by the host-side root directory.
_NOT_ON_HOST = ("/usr", "/run", "/tmp", "/proc", "/sys", "/dev")
#: Clean environment for commands run inside (the host's PATH may point into pyenv).
_INSIDE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "PAGER": "cat",
}
_KEEP_ENV = "TORCX_TECTONIC_KEEP_NODES"
#: Atomic write inside the container (for /run and /tmp): $1 = path, $2 = octal mode.
_WRITE_SCRIPT = (
    'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tt-tmp" && chmod "$2" "$1.tt-tmp" && mv -f "$1.tt-tmp" "$1"'
)

#: Nodes not closed yet (container maybe running, tree on disk), for the atexit safety net.
_OPEN: set[Node] = set()


class _Unchanged(enum.Enum):
    """Sentinel type for "keep the current value" where None is meaningful."""

    KEEP = "keep"


class NodeError(RuntimeError):
    """The node could not do what a test asked (boot, run a command, shut down)."""


def os_release(version: str, board: str | None, flavor: str = "coreos") -> str:
    """Container Linux ``os-release`` text, quoted the way the real one is.

    ``board=None`` mimics releases older than ``COREOS_BOARD``.  ``flavor="flatcar"``
    writes Flatcar's instead: ``ID=flatcar``, ``SYSEXT_LEVEL=1.0`` (what system
    extensions are matched against) and ``FLATCAR_BOARD`` (Flatcar has no ``COREOS_BOARD``).
    """
    if flavor == "flatcar":
        lines = [
            'NAME="Flatcar Container Linux by Kinvolk"',
            "ID=flatcar",
            "ID_LIKE=coreos",
            f"VERSION={version}",
            f"VERSION_ID={version}",
            "BUILD_ID=2024-01-01-0000",
            "SYSEXT_LEVEL=1.0",
            f'PRETTY_NAME="Flatcar Container Linux by Kinvolk {version} (Oklo)"',
            'ANSI_COLOR="38;5;75"',
            'HOME_URL="https://flatcar.org/"',
            'BUG_REPORT_URL="https://issues.flatcar.org"',
        ]
        if board is not None:
            lines.append(f'FLATCAR_BOARD="{board}"')
        lines.append(f'CPE_NAME="cpe:2.3:o:flatcar-linux:flatcar_linux:{version}:*:*:*:*:*:*:*"')
        return "\n".join(lines) + "\n"
    if flavor != "coreos":
        raise ValueError(f"unknown OS flavor {flavor!r}: coreos or flatcar")
    lines = [
        'NAME="Container Linux by CoreOS"',
        "ID=coreos",
        f"VERSION={version}",
        f"VERSION_ID={version}",
        "BUILD_ID=2018-01-01-0000",
        f'PRETTY_NAME="Container Linux by CoreOS {version} (Ladybug)"',
        'ANSI_COLOR="38;5;75"',
        'HOME_URL="https://coreos.com/"',
        'BUG_REPORT_URL="https://issues.coreos.com"',
    ]
    if board is not None:
        lines.append(f'COREOS_BOARD="{board}"')
    return "\n".join(lines) + "\n"


def _check_container_path(path: str) -> PurePosixPath:
    """Reject relative paths and ``..`` so a test can never write outside the node."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts or p == PurePosixPath("/"):
        raise ValueError(f"container path must be absolute, without '..', and not '/': {path!r}")
    return p


def _under(path: PurePosixPath, prefix: str) -> bool:
    return path == PurePosixPath(prefix) or PurePosixPath(prefix) in path.parents


def _write(dest: Path, content: bytes | str, mode: int = 0o644) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    dest.write_bytes(data)
    dest.chmod(mode)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            out.append(int(entry))
    return out


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _kill_nsenter(proc: subprocess.Popen[bytes]) -> None:
    """Kill a timed-out ``nsenter`` command, inside processes first.

    nsenter forks the command into the container.  Killing nsenter first would
    orphan that child to the *host's* PID 1 (the reaper of nsenter's PID
    namespace), which on this VM never reaps it: the zombie then stalls the
    container's shutdown by 10 s.  Killing the command (and its process group)
    first lets nsenter reap it and exit.
    """
    victims = set(_children(proc.pid))
    victims.update(int(e) for e in os.listdir("/proc") if e.isdigit() and _pgid(int(e)) == proc.pid)
    victims.discard(proc.pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _ns(pid: int | str, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def missing_requirements(extra_tools: Sequence[str] = ()) -> str | None:
    """Why nodes cannot boot here (None when they can): tests skip with it."""
    if os.geteuid() != 0:
        return "node tests need root (systemd-nspawn, nsenter)"
    for tool in ("systemd-nspawn", "nsenter", "setpriv", "journalctl", *extra_tools):
        if shutil.which(tool) is None:
            return f"node tests need {tool} (make test installs it)"
    return None


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace.

    Why: the tree must never be deleted while something is mounted in it
    (``rm -r`` would walk into the host's ``/usr``), and tests assert that a
    node leaves no mount behind.
    """
    prefix = str(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == prefix or mnt.startswith(prefix + "/"):
                found.append(mnt)
    return found


#: Joins its own PID to the cgroups named before ``--``, then runs the rest.
_JOIN_CGROUPS = (
    'for g; do [ "$g" = -- ] && break; echo $$ > "$g/cgroup.procs" || exit 125; shift; done; shift; exec "$@"'
)


def _own_cgroup_roots() -> list[Path]:
    """This process's group in each hierarchy a container's systemd writes to:
    the named ``name=systemd`` one (cgroup v1) and the unified one (v2 or hybrid)."""
    unified = next((m for m in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                    if os.path.exists(f"{m}/cgroup.controllers")), None)
    mounts = {"name=systemd": "/sys/fs/cgroup/systemd" if os.path.exists("/sys/fs/cgroup/systemd/cgroup.procs")
              else None, "": unified}
    roots = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mount = mounts.get(controllers)
        if mount:
            roots.append(Path(mount + path.rstrip("/")))
    return roots


def _remove_cgroup(group: Path, timeout: float = 5.0) -> bool:
    """Remove a cgroup and its children (deepest first); False if some stay busy."""
    deadline = time.monotonic() + timeout
    while True:
        busy = False
        for directory, _, _ in sorted(os.walk(group), key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                busy = True
        if not busy or time.monotonic() > deadline:
            return not busy
        time.sleep(0.05)


class Node(Closing):
    """One simulated Container Linux node (a context manager).

    Building happens in the constructor (so a failure to build is reported
    before anything runs); :meth:`boot` starts the container; leaving the
    ``with`` block always shuts it down and deletes the tree.  Set
    ``TORCX_TECTONIC_KEEP_NODES=1`` to keep the tree for post-mortems.
    """

    def __init__(
        self,
        *,
        bundle: Path,
        os_version: str,
        board: str | None = "amd64-usr",
        vendor_addons: Mapping[str, Path] | None = None,
        files: Mapping[str, bytes | str] | None = None,
        update_engine: Mapping[str, Any] | None = None,
        name: str | None = None,
        boot_timeout: float = 60.0,
        tmp_base: Path | None = None,
        nspawn_args: Sequence[str] = (),
        os_flavor: str = "coreos",
        hide_usr: Sequence[str] = (),
    ) -> None:
        """Build the node's tree; nothing runs until :meth:`boot`.

        ``nspawn_args`` are added to the ``systemd-nspawn`` command line (binds,
        for example); ``os_flavor`` picks the os-release (:func:`os_release`);
        ``hide_usr`` names host ``/usr`` paths the node must not have: each gets an
        overlayfs whiteout in the per-test layer, which hides it from the lower layers.
        """
        self.name = name or f"tt-{secrets.token_hex(4)}"
        if len(self.name) > 60 or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"machine name must be <= 60 chars of [A-Za-z0-9._-]: {self.name!r}")
        self.bundle = Path(bundle).resolve()
        if not self.bundle.is_dir():
            raise ValueError(f"bundle {self.bundle} is not a directory (expected a `make install DESTDIR=` tree)")
        self.os_version = os_version
        self.board = board
        self.os_flavor = os_flavor
        os_release("0.0.0", None, os_flavor)  # reject an unknown flavor before building
        self.boot_timeout = boot_timeout
        self.nspawn_args = list(nspawn_args)
        self.keep_tree = os.environ.get(_KEEP_ENV, "") not in ("", "0")
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=str(tmp_base) if tmp_base else None))
        self.root = self.tmpdir / "root"
        self.layer = self.tmpdir / "layer"
        self._run_files = self.tmpdir / "run-files"
        self._binds: list[tuple[Path, str]] = []
        self._cgroups: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._leader: int | None = None
        self._pidns: str | None = None
        self._log_path: Path | None = None
        self._boots = 0
        self.exit_code: int | None = None
        self.boot_seconds: float | None = None
        self.boot_state: str | None = None
        try:
            self._build(vendor_addons or {}, files or {}, update_engine or {"mode": "none"})
            self._hide(hide_usr)
        except BaseException:
            self._remove_tree()
            raise
        _OPEN.add(self)

    # ------------------------------------------------------------------ build
    def _build(
        self,
        vendor_addons: Mapping[str, Path],
        files: Mapping[str, bytes | str],
        update_engine: Mapping[str, Any],
    ) -> None:
        root, usr = self.root, self.layer / "usr"
        for d in ("usr", "etc", "var/log/journal", "run", "tmp", "proc", "sys", "dev", "root", "home", "opt"):
            (root / d).mkdir(parents=True, exist_ok=True)
        for top in os.scandir("/"):  # merged-/usr symlinks: bin -> usr/bin, ...
            if top.is_symlink() and os.readlink(top.path).startswith("usr/"):
                (root / top.name).symlink_to(os.readlink(top.path))
        subprocess.run(["cp", "-a", "/etc/.", f"{root}/etc/"], check=True, capture_output=True)
        etc = root / "etc"
        for wants in (etc / "systemd/system").glob("*.wants"):
            shutil.rmtree(wants)
        (etc / "systemd/system/dbus-org.freedesktop.timesync1.service").unlink(missing_ok=True)
        (etc / "machine-id").write_text(secrets.token_hex(16) + "\n")  # fixed: one journal dir across boots
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "fstab").write_text("# integration-test node: nothing to mount\n")
        (etc / "os-release").unlink(missing_ok=True)
        (etc / "os-release").symlink_to("../usr/lib/os-release")  # as on Container Linux
        # The bundle: everything but usr/ is merged into the root.
        for entry in sorted(self.bundle.iterdir()):
            if entry.name == "usr":
                continue
            if entry.is_dir() and not entry.is_symlink():
                (root / entry.name).mkdir(exist_ok=True)
                subprocess.run(["cp", "-a", f"{entry}/.", f"{root / entry.name}/"], check=True, capture_output=True)
            else:
                raise ValueError(f"bundle {self.bundle}: unexpected top-level entry {entry.name!r}")

        self._write_os_release()
        _write(usr / "share/torcx/profiles/vendor.json", json.dumps(VENDOR_PROFILE) + "\n")
        store = usr / "share/torcx/store"
        store.mkdir(parents=True, exist_ok=True)
        for fname, src in vendor_addons.items():
            if "/" in fname or fname in ("", ".", ".."):
                raise ValueError(f"vendor addon name must be a plain file name: {fname!r}")
            shutil.copyfile(src, store / fname)
        vendor_docker = store / addon_filename("docker", "com.coreos.cl")
        if self.os_flavor == "coreos" and not vendor_docker.exists():  # the OS image's Docker, which the vendor
            vendor_docker.write_bytes(build_addon("docker", "com.coreos.cl"))  # profile selects
        ue_dir = usr / UPDATE_ENGINE_DIR.removeprefix("/usr/")
        _write(ue_dir / "update_engine.py", UPDATE_ENGINE_SCRIPT.read_bytes(), 0o755)
        if self.os_flavor == "coreos":
            _write(usr / "lib/systemd/system-generators/torcx-generator", TORCX_GENERATOR_SCRIPT.read_bytes(), 0o755)
        self._write_scenario(update_engine)
        _write(usr / "lib/systemd/system/update-engine.service", UPDATE_ENGINE_UNIT)
        _write(usr / "lib/systemd/system/kubelet.service", KUBELET_UNIT)
        _write(usr / "share/dbus-1/system.d/com.coreos.update1.conf", UPDATE_ENGINE_POLICY)
        wants = etc / "systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "update-engine.service").symlink_to("/usr/lib/systemd/system/update-engine.service")

        for path, content in files.items():
            p = _check_container_path(path)
            if p in (PurePosixPath("/etc/os-release"), PurePosixPath("/usr/lib/os-release")):
                raise ValueError(f"{path}: set os_version/board instead (os-release is generated)")
            if _under(p, "/usr"):
                _write(self.layer / str(p).lstrip("/"), content)
            elif _under(p, "/run"):
                # /run is a tmpfs at boot: bind the file in, so it is there before
                # any generator runs (it cannot be renamed over or unlinked inside).
                src = self._run_files / str(p).lstrip("/")
                _write(src, content)
                self._binds.append((src, str(p)))
            elif any(_under(p, d) for d in _NOT_ON_HOST):
                raise ValueError(f"cannot pre-seed {path!r}: it is not persistent in a container")
            else:
                _write(root / str(p).lstrip("/"), content)

    def _hide(self, paths: Sequence[str]) -> None:
        """Whiteouts (character devices 0/0) in the per-test /usr layer."""
        for path in paths:
            p = _check_container_path(path)
            if not _under(p, "/usr") or p == PurePosixPath("/usr"):
                raise ValueError(f"can only hide paths below /usr: {path!r}")
            whiteout = self.layer / str(p).lstrip("/")
            if whiteout.exists() or whiteout.is_symlink():
                raise ValueError(f"{path}: the per-test layer already has it; cannot hide it too")
            whiteout.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(whiteout, stat.S_IFCHR | 0o600, os.makedev(0, 0))

    def _write_os_release(self) -> None:
        text = os_release(self.os_version, self.board, self.os_flavor)
        _write(self.layer / "usr/lib/os-release", text)
        # nspawn looks for os-release before mounting the overlay, and a host-side
        # read of /etc/os-release follows the symlink to this hidden copy: keep both equal.
        _write(self.root / "usr/lib/os-release", text)

    def _write_scenario(self, scenario: Mapping[str, Any]) -> None:
        parsed = parse_scenario(scenario)  # fail in the test, not in the node
        _write(
            self.layer / UPDATE_ENGINE_DIR.removeprefix("/") / "scenario.json",
            json.dumps(parsed.to_json(), indent=1) + "\n",
        )

    # ------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        """Whether the nspawn process of the current boot is still alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def reboot_requested(self) -> bool:
        """The last boot ended because the container asked to reboot (nspawn exit 133)."""
        return self.exit_code == REBOOT_EXIT_CODE

    @property
    def leader(self) -> int:
        """Host PID of the container's PID 1 (for ``nsenter -t``)."""
        if self._leader is None or not self.running:
            raise NodeError(f"node {self.name} is not running{self._exit_note()}")
        return self._leader

    def boot(self, *, timeout: float | None = None, wait_ready: bool = True) -> float:
        """Start the container and wait until systemd reports running/degraded.

        Returns the boot time in seconds.  On failure the container is stopped
        and the error carries the nspawn console log.  ``wait_ready=False``
        only starts it: for a boot that is expected to end by itself (a
        reboot during boot), followed by :meth:`wait_exit`.
        """
        if self.running:
            raise NodeError(f"node {self.name} is already running")
        if not self.root.is_dir():
            raise NodeError(f"node {self.name} has been removed")
        timeout = self.boot_timeout if timeout is None else timeout
        self._boots += 1
        self.exit_code = self._leader = self._pidns = None
        self.boot_state = self.boot_seconds = None
        lowers = ["/usr"]
        if (self.bundle / "usr").is_dir():
            lowers.append(str(self.bundle / "usr"))
        lowers.append(str(self.layer / "usr"))
        # setpriv --pdeathsig: if the test process dies (even SIGKILL), nspawn gets
        # SIGTERM, which it turns into an orderly poweroff of the container.  It
        # follows the forking *thread*: boot nodes from the main thread.
        cmd = [
            "setpriv",
            "--pdeathsig=SIGTERM",
            "--",
            "systemd-nspawn",
            f"--directory={self.root}",
            f"--overlay-ro={':'.join(lowers)}:/usr",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--boot",
            "--console=passive",
        ]
        cmd += [f"--bind={src}:{dest}" for src, dest in self._binds]
        cmd += self.nspawn_args
        # Its own cgroup: with --keep-unit, nspawn puts the container below the cgroup it
        # was started in, so nodes started from one cgroup (ours: the host's root, no
        # systemd here) would share /payload/system.slice and remove each other's groups.
        self._cgroups = [root / f"simnode-{self.name}" for root in _own_cgroup_roots()]
        for group in self._cgroups:
            group.mkdir(exist_ok=True)
        cmd = ["sh", "-c", _JOIN_CGROUPS, "sh", *map(str, self._cgroups), "--", *cmd]
        self._log_path = self.tmpdir / f"nspawn-{self._boots}.log"
        start = time.monotonic()
        with open(self._log_path, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_ready:
            return 0.0
        try:
            self._wait_booted(start + timeout, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.shutdown(timeout=15)
            raise
        self.boot_seconds = time.monotonic() - start
        return self.boot_seconds

    def _wait_booted(self, deadline: float, timeout: float) -> None:
        assert self._proc is not None
        own_mnt = _ns("self", "mnt")
        while self._leader is None:
            if self._proc.poll() is not None:
                raise NodeError(f"systemd-nspawn exited with {self._proc.returncode} during boot\n{self.nspawn_log()}")
            for child in _children(self._proc.pid):
                try:
                    comm = Path(f"/proc/{child}/comm").read_text().strip()
                except OSError:
                    continue
                if comm == "systemd" and _ns(child, "mnt") not in (None, own_mnt):
                    self._leader, self._pidns = child, _ns(child, "pid")
            if self._leader is None:
                if time.monotonic() > deadline:
                    raise NodeError(f"node {self.name}: no container PID 1 after {timeout}s\n{self.nspawn_log()}")
                time.sleep(0.02)
        state = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NodeError(
                    f"node {self.name} did not finish booting in {timeout}s (last state {state!r})\n"
                    f"{self._diagnostics()}"
                )
            try:
                res = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
            except NodeError:
                if not self.running:
                    raise NodeError(
                        f"node {self.name}: nspawn exited with {self._proc.returncode} during boot\n{self.nspawn_log()}"
                    ) from None
                time.sleep(0.05)
                continue
            state = res.stdout.strip()
            if state in ("running", "degraded"):
                self.boot_state = state
                return
            if state in ("maintenance", "stopping"):
                raise NodeError(f"node {self.name} boot ended in state {state!r}\n{self._diagnostics()}")
            time.sleep(0.05)  # "offline"/"unknown": PID 1 not answering on its socket yet

    def boot_again(
        self,
        *,
        os_version: str | None = None,
        board: str | _Unchanged | None = _Unchanged.KEEP,
        update_engine: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> float:
        """Boot the same root again, e.g. after a reboot request (nspawn exit 133).

        ``os_version``/``board`` change ``os-release`` first, which is how a
        test plays "the node rebooted into the new OS" (``board=None`` drops
        ``COREOS_BOARD``; by default the board is kept).  ``update_engine`` replaces the boot-time scenario.
        /run starts empty again, so the update marker is gone, as after a
        real reboot.
        """
        if self.running:
            raise NodeError(f"node {self.name} is still running: wait_exit() or shutdown() first")
        if os_version is not None:
            self.os_version = os_version
        if not isinstance(board, _Unchanged):
            self.board = board
        self._write_os_release()
        if update_engine is not None:
            self._write_scenario(update_engine)
        return self.boot(timeout=timeout)

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait until the container stops by itself; return nspawn's exit code.

        0 is a poweroff, :data:`REBOOT_EXIT_CODE` (133) a reboot request.
        """
        if self._proc is None:
            raise NodeError(f"node {self.name} was never booted")
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise NodeError(f"node {self.name} still running after {timeout}s\n{self._diagnostics()}") from None
        self._after_exit()
        assert self.exit_code is not None
        return self.exit_code

    def shutdown(self, timeout: float = 30.0) -> None:
        """Power the container off (orderly first, by force if it must); no-op if stopped.

        Raises :class:`NodeError` if a mount or a process of the node is left.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(Exception):
                self.run("systemctl", "poweroff", "--no-block", check=False, timeout=min(10.0, timeout))
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)  # nspawn: SIGRTMIN+3 to PID 1, i.e. poweroff
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._kill_hard()
        self._after_exit()

    def cut_power(self) -> None:
        """Stop the node at once, as a power cut does: the container's PID 1 is
        killed, so no unit stops and nothing cleans up. (The host's page cache
        keeps what the node wrote: this tests which files a cut leaves renamed
        or not, not their durability.)"""
        if not self.running:
            raise NodeError(f"node {self.name} is not running{self._exit_note()}")
        self._kill_hard()
        # the kernel kills the rest of the PID namespace after its init: give it the moment it takes
        deadline = time.monotonic() + 10
        while self.leftover_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._after_exit()

    def _kill_hard(self) -> None:
        """Last resort: killing the container's PID 1 kills its whole PID namespace."""
        assert self._proc is not None
        if self._leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._leader, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=10)

    def _after_exit(self) -> None:
        """Record the exit and make sure nothing of this boot is left behind."""
        assert self._proc is not None
        if self.exit_code is not None and self._leader is None:
            return
        self.exit_code = self._proc.returncode
        stray = self.leftover_processes()
        for pid in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._leader = None
        # nspawn leaves an empty propagation directory when /run is not a tmpfs.
        with contextlib.suppress(OSError):
            os.rmdir(f"/run/systemd/nspawn/propagate/{self.name}")
        left = mounts_under(self.tmpdir)
        busy = [str(group) for group in self._cgroups if not _remove_cgroup(group)]
        self._cgroups = []
        if stray or left or busy:
            raise NodeError(f"node {self.name} left processes {stray} / mounts {left} / cgroups {busy} behind")

    def leftover_processes(self) -> list[int]:
        """Host PIDs of processes still in the container's PID namespace (empty after exit)."""
        if self._pidns is None:
            return []
        return [
            int(e)
            for e in os.listdir("/proc")
            if e.isdigit() and int(e) != (self._proc.pid if self._proc else -1) and _ns(e, "pid") == self._pidns
        ]

    def close(self) -> None:
        """Shut down and delete the tree (unless kept); safe to call twice."""
        try:
            self.shutdown()
        finally:
            self._remove_tree()
            _OPEN.discard(self)

    def _remove_tree(self) -> None:
        if not self.tmpdir.exists():
            return
        if self.keep_tree:
            print(f"[node {self.name}] kept {self.tmpdir}")
            return
        left = mounts_under(self.tmpdir)
        if left:
            raise NodeError(f"refusing to delete {self.tmpdir}: still mounted: {left}")
        shutil.rmtree(self.tmpdir)



    # ---------------------------------------------------------------- inside
    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container (all its namespaces, root ``/``).

        Output is decoded as UTF-8 (undecodable bytes replaced).  A timeout
        kills the command *inside* too (``nsenter`` forks, so its whole
        process group is killed) and raises :class:`NodeError`.
        """
        res = self.run_bytes(*cmd, check=check, timeout=timeout, input=input, env=env)
        return subprocess.CompletedProcess(
            res.args,
            res.returncode,
            res.stdout.decode("utf-8", "replace"),
            res.stderr.decode("utf-8", "replace"),
        )

    def run_bytes(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """:meth:`run` with raw bytes output (for binary files)."""
        if not cmd:
            raise ValueError("no command given")
        leader = self.leader
        if _ns(leader, "pid") != self._pidns:
            raise NodeError(f"node {self.name}: PID {leader} is no longer the container's PID 1")
        full = ["nsenter", "-t", str(leader), "-a", "--", *cmd]
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**_INSIDE_ENV, **(env or {})},
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_nsenter(proc)
            out, err = proc.communicate()
            raise NodeError(
                f"node {self.name}: {list(cmd)} timed out after {timeout}s\n"
                f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
            ) from None
        res = subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
        if check and res.returncode != 0:
            raise NodeError(
                f"node {self.name}: {list(cmd)} exited with {res.returncode}\n"
                f"stdout: {out.decode(errors='replace')}\nstderr: {err.decode(errors='replace')}"
            )
        return res

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``systemctl --no-pager ARGS`` inside the container."""
        return self.run("systemctl", "--no-pager", *args, check=check, timeout=timeout)

    # ----------------------------------------------------------------- files
    def host_path(self, path: str) -> Path:
        """Where a container path lives on the host (for /etc, /var, /opt, /root...).

        Symlinks are not followed; :meth:`read`/:meth:`exists` do that safely.
        Raises ValueError for /usr, /run, /tmp, /proc, /sys, /dev.
        """
        p = _check_container_path(path)
        if any(_under(p, d) for d in _NOT_ON_HOST):
            raise ValueError(f"{path} is not backed by the host-side root; use run()/read()")
        return self.root / str(p).lstrip("/")

    def _resolved_on_host(self, path: str, *, writing: bool = False) -> Path | None:
        """The host file a container path resolves to, if that is safe to use.

        ``None`` when the path is not host-backed or resolves outside it (an
        absolute symlink would otherwise be followed on the *host*).
        """
        try:
            p = self.host_path(path)
        except ValueError:
            return None
        real = p.resolve()
        root = self.root.resolve()
        if real != root and root not in real.parents:
            return None
        rel = PurePosixPath("/") / real.relative_to(root)
        stub = rel == PurePosixPath("/usr/lib/os-release") and not writing  # kept equal to the layer's
        if any(_under(rel, d) for d in _NOT_ON_HOST) and not stub:
            return None
        return real

    def read_bytes(self, path: str) -> bytes:
        """A container file's content; raises FileNotFoundError if it does not exist."""
        host = self._resolved_on_host(path)
        if host is not None:
            return host.read_bytes()
        if not self.running:
            return self._read_stopped(path)
        res = self.run_bytes("cat", "--", path, check=False)
        if res.returncode != 0:
            raise FileNotFoundError(f"node {self.name}: {path}: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout

    def read(self, path: str) -> str:
        """A container file's text (UTF-8)."""
        return self.read_bytes(path).decode("utf-8")

    def _read_stopped(self, path: str) -> bytes:
        """Read /usr from the layers when the container is down (/run, /tmp are gone)."""
        p = _check_container_path(path)
        if _under(p, "/usr"):
            rel = str(p).lstrip("/")
            for base in (self.layer, self.bundle, Path("/")):
                if (base / rel).is_file():
                    return (base / rel).read_bytes()
            raise FileNotFoundError(f"node {self.name}: {path} in no /usr layer")
        raise NodeError(f"node {self.name} is not running: {path} does not exist without it")

    def exists(self, path: str) -> bool:
        """Whether a container path exists (following symlinks, as ``test -e``)."""
        host = self._resolved_on_host(path)
        if host is not None:
            return host.exists()
        if not self.running:
            try:
                self._read_stopped(path)
            except (FileNotFoundError, NodeError):
                return False
            return True
        return self.run("test", "-e", path, check=False).returncode == 0

    def write(self, path: str, content: bytes | str, mode: int = 0o644) -> None:
        """Create or replace a container file (/usr only while stopped)."""
        p = _check_container_path(path)
        host = self._resolved_on_host(path, writing=True)
        if host is not None:
            _write(host, content, mode)
        elif _under(p, "/usr"):
            if self.running:
                raise NodeError("the /usr overlay must not change under a running container")
            _write(self.layer / str(p).lstrip("/"), content, mode)
        else:
            self.run(
                "sh",
                "-c",
                _WRITE_SCRIPT,
                "sh",
                path,
                format(mode, "o"),
                input=content,
            )

    # --------------------------------------------------------------- journal
    def journal(self, unit: str | None = None, *, extra: Sequence[str] = ()) -> str:
        """The node's journal (all boots), from inside or, once stopped, from disk."""
        args = ["--no-pager", "-o", "short-precise", "-q"]
        if unit:
            args += ["-u", unit]
        args += list(extra)
        if self.running:
            return self.run("journalctl", *args, timeout=60).stdout
        res = subprocess.run(
            ["journalctl", "-D", str(self.root / "var/log/journal"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return res.stdout + res.stderr

    def nspawn_log(self) -> str:
        """The console output of the current (or last) boot."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def _exit_note(self) -> str:
        return f" (nspawn exited with {self.exit_code})" if self.exit_code is not None else ""

    def _diagnostics(self) -> str:
        """What a failing test needs to see: failed units, then the console."""
        parts = []
        if self.running:
            with contextlib.suppress(Exception):
                parts.append(self.systemctl("--failed", "--no-legend", check=False, timeout=10).stdout)
                parts.append(self.systemctl("list-jobs", "--no-legend", check=False, timeout=10).stdout)
        parts.append(self.nspawn_log()[-8000:])
        return "\n".join(parts)

    # -------------------------------------------------------------- helpers
    def wait_for(self, condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition") -> None:
        """Poll ``condition`` until true; NodeError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.name}: timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def update_engine_status(self) -> tuple[int, float, str, str, int]:
        """``GetStatus`` of the update_engine stand-in, called over the node's bus."""
        res = self.run(
            "busctl",
            "--json=short",
            "call",
            "com.coreos.update1",
            "/com/coreos/update1",
            "com.coreos.update1.Manager",
            "GetStatus",
            timeout=30,
        )
        data = json.loads(res.stdout)["data"]
        return (int(data[0]), float(data[1]), str(data[2]), str(data[3]), int(data[4]))

    def update_engine_attempts(self) -> int:
        """How many times ``AttemptUpdate`` was called since this boot."""
        try:
            return int(self.read(f"{UPDATE_STATE_DIR}/attempts"))
        except FileNotFoundError:
            return 0

    def set_update_engine(self, scenario: Mapping[str, Any]) -> None:
        """Change what the next ``AttemptUpdate`` does (running: until reboot; stopped: boot default)."""
        parsed = parse_scenario(scenario)
        if self.running:
            self.write(f"{UPDATE_STATE_DIR}/scenario.json", json.dumps(parsed.to_json()) + "\n")
        else:
            self._write_scenario(scenario)

    def update_marker_exists(self) -> bool:
        """Whether update_engine's "update applied" marker is in /run."""
        return self.exists(str(UPDATE_MARKER))


@atexit.register
def _cleanup_all() -> None:
    """Safety net: no container or tree outlives the test process, even if a test leaked a node."""
    for node in list(_OPEN):
        with contextlib.suppress(Exception):
            node.close()
