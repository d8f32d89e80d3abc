"""What a test node holds that torcx-tectonic may change: observed, saved and restored.

The campaign's tests compare what torcx, systemd-sysext, the kubelet and
Docker would read (stores, profiles, next-profile, runtime images and their
links, kubelet.env, the Docker reset marker and data, the kubelet's
enablement) before and after a step, look for temporary
files anywhere the product writes, and put a node back to a saved state
between cases instead of booting a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from simnode.node import Node

#: The campaign starts the same units far more often than the default start limit allows.
NO_START_LIMIT = {"/etc/systemd/system.conf.d/90-tt-crash.conf": "[Manager]\nDefaultStartLimitIntervalSec=0\n"}
#: The state a step may change, as one restorable set (relative to /).
STATE_TREES = ("var/lib/torcx", "etc/torcx", "etc/kubernetes", "var/lib/torcx-tectonic", "var/cache/torcx-tectonic",
               "run/torcx-tectonic", "var/lib/node_exporter", "var/lib/docker", "var/lib/docker.torcx-tectonic-old",
               "etc/systemd/system/multi-user.target.wants", "etc/extensions", "opt/extensions")
#: What torcx, the kubelet and Docker read: compared file by file, before and after.
PRODUCT_TREES = ("/var/lib/torcx", "/etc/torcx", "/var/lib/docker", "/var/lib/docker.torcx-tectonic-old",
                 "/var/cache/torcx-tectonic", "/etc/extensions", "/opt/extensions")
PRODUCT_FILES = ("/etc/kubernetes/kubelet.env", "/var/lib/torcx-tectonic/docker-reset-needed",
                 "/etc/systemd/system/multi-user.target.wants/kubelet.service")
#: Where a temporary file must never be left (/var/lib: its entries only, for Docker's moved-aside data).
WATCHED_TREES = ("/var/lib/torcx", "/etc/torcx", "/etc/kubernetes", "/var/lib/torcx-tectonic",
                 "/var/cache/torcx-tectonic", "/var/lib/node_exporter", "/var/lib", "/etc/extensions",
                 "/opt/extensions")
TEMPORARY_MARKS = (".tmp", ".link", ".gc-", ".torcx-tectonic-old")

#: One call inside the node: this boot's records of a flow, and the temporary files under /run/torcx-tectonic.
_INSIDE_SCRIPT = """
import json, os, sys
top = "/run/torcx-tectonic"
records, temporary = {}, []
flow = os.path.join(top, sys.argv[1])
for name in sorted(os.listdir(flow)) if os.path.isdir(flow) else []:
    with open(os.path.join(flow, name), "rb") as f:
        records[name] = f.read().decode("utf-8", "replace")
for where, dirs, files in os.walk(top):
    temporary += [os.path.join(where, n) for n in files if n.endswith(".tmp")]
print(json.dumps({"records": records, "temporary": sorted(temporary)}))
"""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _entries(node: Node, top: str) -> dict[str, str]:
    """Every entry below ``top`` on the node: files by content, directories
    and symlinks by kind and target (``top`` itself is not an entry: the
    service manager creates the writable directories of a unit)."""
    found: dict[str, str] = {}
    root = node.host_path(top)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        name = f"{top}/{path.relative_to(root)}"
        if path.is_symlink():
            found[name] = f"-> {path.readlink()}"
        elif path.is_dir():
            found[name] = "<dir>"
        else:
            found[name] = _digest(path.read_bytes())
    return found


def _file(node: Node, path: str) -> str | None:
    host = node.host_path(path)
    if host.is_symlink():
        return f"-> {host.readlink()}"
    return _digest(host.read_bytes()) if host.is_file() else None


@dataclass(frozen=True)
class Observed:
    """What the node holds: the product's files (and the flow's records), and temporary files."""

    state: dict[str, str]
    temporary: list[str]


#: The metrics writer, which a run record's change starts: its temporary file is a live writer's.
METRICS_UNIT = "torcx-tectonic-metrics.service"


def metrics_settled(node: Node) -> bool:
    state = node.systemctl("is-active", METRICS_UNIT, check=False).stdout.strip()
    return state not in ("active", "activating", "deactivating", "reloading")


def observe(node: Node, flow: str, *, with_records: bool = True) -> Observed:
    """What torcx, the kubelet and Docker see, plus the step records of the
    flow (their values: a record's time and run id differ between runs), and
    every temporary name anywhere torcx-tectonic writes, once the metrics
    writer that the step's last record started is done (a temporary file of
    a writer that still runs is no leftover)."""
    node.wait_for(lambda: metrics_settled(node), timeout=60, what=f"{METRICS_UNIT} to end")
    state: dict[str, str] = {}
    for top in PRODUCT_TREES:
        state.update(_entries(node, top))
    for path in PRODUCT_FILES:
        value = _file(node, path)
        if value is not None:
            state[path] = value
    inside = json.loads(node.run("python3", "-c", _INSIDE_SCRIPT, flow).stdout)
    if with_records:
        for name, text in inside["records"].items():
            if name.endswith(".json"):
                try:
                    value = json.loads(text).get("value")
                except ValueError:
                    value = f"NOT JSON: {text[:80]!r}"
                state[f"record {name[:-5]}"] = _digest(json.dumps(value, sort_keys=True).encode())
    temporary = list(inside["temporary"])
    for top in WATCHED_TREES:
        root = node.host_path(top)
        if root.is_dir():
            paths = root.iterdir() if top == "/var/lib" else root.rglob("*")
            temporary += [f"{top}/{p.relative_to(root)}" for p in paths if any(m in p.name for m in TEMPORARY_MARKS)]
    return Observed(state, sorted(temporary))


def outcome(before: dict[str, str], after: dict[str, str], found: dict[str, str]) -> tuple[str, list[str]]:
    """Which of the step's changes the node holds (``as before``, ``as
    after`` or ``after: ...``), and every entry that is neither."""
    problems = [f"{key}: {found.get(key)} is neither before ({before.get(key)}) nor after ({after.get(key)})"
                for key in sorted(set(before) | set(after) | set(found))
                if found.get(key) not in (before.get(key), after.get(key))]
    # directories say nothing the files in them do not: the outcome names files
    changed = sorted(k for k in set(before) | set(after)
                     if before.get(k) != after.get(k) and "<dir>" not in (before.get(k), after.get(k)))
    done = [k for k in changed if found.get(k) == after.get(k)]
    if not done:
        return "as before", problems
    if len(done) == len(changed):
        return "as after", problems
    return "after: " + ", ".join(_short(k) for k in done), problems


def _short(key: str) -> str:
    for prefix, short in (("/var/lib/torcx/store/", "store "), ("/etc/torcx/profiles/", "profile "),
                          ("/etc/torcx/", ""), ("/var/cache/torcx-tectonic/manifests/amd64-usr/", "cached manifest "),
                          ("/var/cache/torcx-tectonic/sysext/", "cached "), ("/opt/extensions/docker/", "image "),
                          ("/etc/extensions/", "link "), ("/var/lib/torcx-tectonic/", ""), ("/etc/kubernetes/", ""),
                          ("/etc/systemd/system/multi-user.target.wants/", "enabled "), ("/var/lib/", "")):
        if key.startswith(prefix):
            return short + key[len(prefix):]
    return key




def snapshot(node: Node, path: str) -> str:
    """Save the state trees into ``path`` inside the node (a tar in its /run)."""
    directory = path.rsplit("/", 1)[0]
    node.run("sh", "-c", f'mkdir -p {directory} && cd / && ls -d "$@" 2>/dev/null | '
             f'xargs tar --exclude="run/torcx-tectonic/*.lock" --exclude=run/torcx-tectonic/lock -cpf {path}',
             "sh", *STATE_TREES)
    return path


def restore(node: Node, path: str) -> None:
    """Back to a snapshot: the kubelet a flow started is stopped, the state trees replaced."""
    node.run("sh", "-c", "systemctl stop kubelet.service 2>/dev/null; cd / && rm -rf \"$@\" && "
             f"tar -xpf {path}", "sh", *STATE_TREES)
