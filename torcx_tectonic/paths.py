"""Every well-known path in one place (as torcx's paths.go does).

The constants are the node's real locations, as text: the generator imports
this module at every boot and must not pay for ``pathlib`` (a few
milliseconds of a start-up that blocks the boot). Steps reach the node
through a :class:`NodePaths`, which puts the same layout under another root
as ``pathlib.Path`` objects, so the steps are tested on a temporary
directory instead of by patching modules.
"""

from __future__ import annotations

import os

from .installdirs import LIBEXEC_DIR as _LIBEXEC_DIR
from .installdirs import SYSCONF_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

#: torcx reads VERSION_ID from this file only (an /etc/os-release override does not move its stores).
OS_RELEASE = "/usr/lib/os-release"

CONFIG_FILE = os.path.join(SYSCONF_DIR, "torcx-tectonic/torcx-tectonic.conf")
CONFIG_DROPIN_DIR = os.path.join(SYSCONF_DIR, "torcx-tectonic/conf.d")

VENDOR_STORE = "/usr/share/torcx/store"
OEM_STORE = "/usr/share/oem/torcx/store"
USER_STORE = "/var/lib/torcx/store"
VENDOR_PROFILES = "/usr/share/torcx/profiles"
USER_PROFILES = "/etc/torcx/profiles"
NEXT_PROFILE = "/etc/torcx/next-profile"
TORCX_METADATA = "/run/metadata/torcx"

UPDATE_ENGINE_MARKER = "/run/update_engine_autoupdate_completed"

#: System extensions: the links systemd-sysext merges, and where runtime images are kept.
EXTENSIONS_DIR = "/etc/extensions"
IMAGE_STORE = "/opt/extensions"
#: Where systemd-sysupdate finds transfers: <dir>/sysupdate.d/*.conf and <dir>/sysupdate.<component>.d/*.conf.
SYSUPDATE_DIRS = ("/etc", "/run", "/usr/local/lib", "/usr/lib")
#: Where an enabled unit's .wants links are (systemctl enable, Ignition).
ENABLED_UNITS_DIR = "/etc/systemd/system"

KUBECONFIG = "/etc/kubernetes/kubeconfig"
KUBELET_ENV = "/etc/kubernetes/kubelet.env"
INSTALLER_KUBELET_ENV = "/etc/kubernetes/installer/kubelet.env"
RUNTIME_MAPPINGS = "/etc/kubernetes/installer/runtime-mappings.yaml"

KEYRING = "/etc/torcx-tectonic/keyring.gpg"
METRICS_DIR = "/var/lib/node_exporter/textfile_collector"

#: This boot's step records, one directory per flow (see state.py).
STATE_DIR = "/run/torcx-tectonic"
#: Each flow's last run, kept across boots so the status can tell what a reboot ended.
RUNS_DIR = "/var/lib/torcx-tectonic/runs"
#: Verified downloads that later steps and the status reuse (manifests).
CACHE_DIR = "/var/cache/torcx-tectonic"
LOCK_FILE = STATE_DIR + "/lock"
DOCKER_DATA = "/var/lib/docker"
DOCKER_RESET_MARKER = "/var/lib/torcx-tectonic/docker-reset-needed"
#: The last runtime change, kept across boots: what a rollback goes back to (see state.py).
RUNTIME_CHANGE = "/var/lib/torcx-tectonic/runtime-change.json"
LIBEXEC_DIR = _LIBEXEC_DIR


def flow_state_dir(flow: str, state_dir: str | os.PathLike[str] = STATE_DIR) -> str:
    """Where this boot's run of ``flow`` keeps its step records; it exists
    once a run of the flow began in this boot (a unit condition can ask)."""
    return os.path.join(state_dir, flow)


def backoff_file(flow: str, state_dir: str | os.PathLike[str] = STATE_DIR) -> str:
    """While it exists, ``flow`` backs off after a failed run: the flow's
    retry unit waits to start it again at the next try; the next run that
    begins (that one, or one an operator starts) removes it. /run forgets
    it at a reboot."""
    return os.path.join(state_dir, f"{flow}.backoff")


class NodePaths:
    """The node's well-known paths under ``root`` (``/`` on a node)."""

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        from pathlib import Path

        self.root: Path = Path(root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodePaths) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"NodePaths(root={self.root!r})"

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def at(self, path: str) -> Path:
        """A path as the node names it, under the root. A configured path
        is the node's own, so one already under the root (a test's node)
        is taken as it is."""
        from pathlib import Path

        given = Path(path)
        return given if self.root != Path("/") and given.is_relative_to(self.root) else self._at(path)

    def on_node(self, path: Path) -> str:
        """A path under the root as the node names it (what a link must point at)."""
        return "/" + str(path.relative_to(self.root))

    @property
    def os_release(self) -> Path:
        return self._at(OS_RELEASE)

    @property
    def vendor_store(self) -> Path:
        return self._at(VENDOR_STORE)

    @property
    def oem_store(self) -> Path:
        return self._at(OEM_STORE)

    @property
    def user_store(self) -> Path:
        return self._at(USER_STORE)

    @property
    def vendor_profiles(self) -> Path:
        return self._at(VENDOR_PROFILES)

    @property
    def user_profiles(self) -> Path:
        return self._at(USER_PROFILES)

    @property
    def next_profile(self) -> Path:
        return self._at(NEXT_PROFILE)

    @property
    def extensions_dir(self) -> Path:
        return self._at(EXTENSIONS_DIR)

    def extension_link(self, name: str) -> Path:
        """The link in /etc/extensions that makes systemd-sysext merge the
        image ``name`` names (``docker``; Flatcar's own is ``docker-flatcar``)."""
        return self.extensions_dir / f"{name}.raw"

    @property
    def sysupdate_dirs(self) -> list[Path]:
        return [self._at(path) for path in SYSUPDATE_DIRS]

    @property
    def enabled_units_dir(self) -> Path:
        return self._at(ENABLED_UNITS_DIR)

    @property
    def image_store(self) -> Path:
        return self._at(IMAGE_STORE)

    @property
    def torcx_metadata(self) -> Path:
        return self._at(TORCX_METADATA)

    @property
    def update_marker(self) -> Path:
        return self._at(UPDATE_ENGINE_MARKER)

    @property
    def state_dir(self) -> Path:
        return self._at(STATE_DIR)

    @property
    def runs_dir(self) -> Path:
        return self._at(RUNS_DIR)

    @property
    def cache_dir(self) -> Path:
        return self._at(CACHE_DIR)

    @property
    def lock_file(self) -> Path:
        return self._at(LOCK_FILE)

    @property
    def docker_data(self) -> Path:
        return self._at(DOCKER_DATA)

    @property
    def docker_reset_marker(self) -> Path:
        return self._at(DOCKER_RESET_MARKER)

    @property
    def runtime_change(self) -> Path:
        return self._at(RUNTIME_CHANGE)
