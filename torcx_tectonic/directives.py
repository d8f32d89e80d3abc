"""The unit directives the bundle writes, and the systemd that understands them.

The bundle supports systemd 233 and newer: the oldest it targets is a
Container Linux node of the Tectonic years; Container Linux's last releases
ship 241, and Flatcar's stable releases 252 and later. Every
directive the generator or a shipped unit uses is in ``INTRODUCED`` with the
version that introduced it (a test checks that nothing else is written), and
the generator leaves out what the running systemd would not understand: an
older systemd ignores an unknown directive with a warning at every reload,
and some (``SystemCallFilter=@system-service``) would even mean something
else. Where the unit's meaning depends on a newer directive, the unit says
it another way (a step that follows another is started by ``ExecStartPost=``
and ordered ``After=`` it, not by ``OnSuccess=``, which needs 249).
Plain strings and ``os`` only: the generator imports this at every boot.
"""

from __future__ import annotations

import os

MIN_SYSTEMD = 233

#: "Key" or "Key=value" (when a value needs more than the key) → the systemd version that introduced it.
INTRODUCED = {
    # [Unit], [Install], [Path], [Timer]
    "Description": 1, "Documentation": 1, "SourcePath": 1, "Requires": 1, "Wants": 1, "After": 1, "Before": 1,
    "RequiresMountsFor": 201, "StopWhenUnneeded": 1, "ConditionPathExists": 1, "ConditionPathIsDirectory": 1,
    "OnFailure": 1, "WantedBy": 1, "PathExists": 1, "PathChanged": 1, "Unit": 1, "OnActiveSec": 1,
    "OnUnitActiveSec": 1, "StartLimitIntervalSec": 230,
    # [Service]
    "Type": 1, "ExecStart": 1, "Environment": 1, "ExecStartPost": 1, "ExecStopPost": 1, "SyslogIdentifier": 1,
    "TimeoutStartSec": 188, "NotifyAccess": 1, "SuccessExitStatus": 189,
    # the sandbox
    "NoNewPrivileges": 187, "PrivateTmp": 1, "PrivateDevices": 209, "ProtectHome": 214, "CapabilityBoundingSet": 1,
    "UMask": 1, "DevicePolicy": 1, "SystemCallArchitectures": 209, "SystemCallErrorNumber": 209,
    "RestrictAddressFamilies": 211, "RuntimeDirectory": 211, "ReadWritePaths": 231, "RestrictRealtime": 231,
    "MemoryDenyWriteExecute": 231, "ProtectKernelTunables": 232, "ProtectKernelModules": 232,
    "ProtectControlGroups": 232, "RemoveIPC": 232, "RestrictNamespaces": 233,
    # needs StateDirectory= and its kin to leave the step's own directories writable
    "ProtectSystem=strict": 235,
    "StateDirectory": 235, "CacheDirectory": 235, "ConfigurationDirectory": 235, "RuntimeDirectoryPreserve": 235,
    "LockPersonality": 235, "KeyringMode": 235, "IPAddressDeny": 235,
    # the group names are unknown before 235: the filter would allow nothing
    "SystemCallFilter=@system-service": 235, "SystemCallFilter=@system-service @mount": 235,
    "DeviceAllow": 1,
    # newer than Container Linux's last systemd (241): left out there, written on Flatcar (252 and later)
    "ProtectHostname": 242, "RestrictSUIDSGID": 242, "ProtectKernelLogs": 244, "ProtectClock": 245,
    "PrivateIPC": 248,
}

#: A systemd this new understands every directive above (the generator then filters nothing).
NEWEST_INTRODUCED = max(INTRODUCED.values())

#: Where systemd installs its shared library, named after its version.
_LIBRARY_DIRS = ("/usr/lib/systemd", "/usr/lib64/systemd", "/lib/systemd")
_LIBRARY_PREFIX = "libsystemd-shared-"


def escape(path: object) -> str:
    """A path as a unit line must write it: ``%`` starts a specifier."""
    return str(path).replace("%", "%%")


def introduced(line: str) -> int | None:
    """The version that understands a unit line, None when it is not in the table."""
    key, _, value = line.partition("=")
    return INTRODUCED.get(f"{key}={value}", INTRODUCED.get(key))


def understood(line: str, version: int) -> bool:
    """Whether systemd ``version`` understands the line (comments and sections always)."""
    if not line or line.startswith(("#", "[")):
        return True
    since = introduced(line)
    return since is not None and since <= version


def _version_from(directory: str) -> int | None:
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for name in names:
        if name.startswith(_LIBRARY_PREFIX):
            digits = name[len(_LIBRARY_PREFIX):].split(".", 1)[0].split("-", 1)[0]
            if digits.isdigit():
                return int(digits)
    return None


def running_version(root: str = "/") -> int:
    """The systemd version of this system, from the name of its shared
    library (libsystemd-shared-252.so); the oldest supported one when that
    cannot be found, so that nothing is written it would not understand."""
    candidates = [os.path.join(root, d.lstrip("/")) for d in _LIBRARY_DIRS]
    lib = os.path.join(root, "usr/lib")
    try:  # Debian's multiarch directories: /usr/lib/x86_64-linux-gnu/systemd
        candidates += [os.path.join(lib, d, "systemd") for d in os.listdir(lib) if d.endswith("-linux-gnu")]
    except OSError:
        candidates += []
    for directory in candidates:
        found = _version_from(directory)
        if found is not None:
            return max(found, MIN_SYSTEMD)
    return MIN_SYSTEMD
