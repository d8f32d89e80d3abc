"""Every well-known path in one place (as torcx's paths.go does).

Functions that read or write the node take their paths as arguments; these
constants are the defaults the configuration and the entry points use.
"""

from __future__ import annotations

from pathlib import Path

from .installdirs import LIBEXEC_DIR as _LIBEXEC_DIR
from .installdirs import SYSCONF_DIR

OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))

CONFIG_FILE = Path(SYSCONF_DIR, "torcx-tectonic/torcx-tectonic.conf")
CONFIG_DROPIN_DIR = Path(SYSCONF_DIR, "torcx-tectonic/conf.d")

VENDOR_STORE = Path("/usr/share/torcx/store")
USER_STORE = Path("/var/lib/torcx/store")
VENDOR_PROFILES = Path("/usr/share/torcx/profiles")
USER_PROFILES = Path("/etc/torcx/profiles")
NEXT_PROFILE = Path("/etc/torcx/next-profile")
TORCX_METADATA = Path("/run/metadata/torcx")

UPDATE_ENGINE_MARKER = Path("/run/update_engine_autoupdate_completed")

KUBECONFIG = Path("/etc/kubernetes/kubeconfig")
KUBELET_ENV = Path("/etc/kubernetes/kubelet.env")
INSTALLER_KUBELET_ENV = Path("/etc/kubernetes/installer/kubelet.env")
RUNTIME_MAPPINGS = Path("/etc/kubernetes/installer/runtime-mappings.yaml")

KEYRING = Path("/etc/torcx-tectonic/keyring.gpg")

STATE_DIR = Path("/run/torcx-tectonic")
LOCK_FILE = Path("/run/torcx-tectonic/lock")
DOCKER_DATA = Path("/var/lib/docker")
DOCKER_RESET_MARKER = Path("/var/lib/torcx-tectonic/docker-reset-needed")
LIBEXEC_DIR = Path(_LIBEXEC_DIR)
BOOTSTRAP_FINISH_PENDING = STATE_DIR / "bootstrap" / "finish-pending"
