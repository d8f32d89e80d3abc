"""Power loss: what a reader sees while files are replaced, and a node cut off mid-step.

That a renamed file is synced first and its directory after is checked on the
system calls of every step (test_crash.py, the last test). Here:

- a reader on the side never finds a profile, next-profile, run record,
  marker, metrics file or addon empty or short while the flows replace them;
- a node whose power is cut while a step is held at a chosen system call
  (strace's delay injection, from a test drop-in) boots into a state the
  next run completes: after kubelet.env was renamed, the kubelet is enabled
  and starts; before an addon was renamed, the temporary file is removed by
  the next run and the bootstrap converges.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from simnode.cluster import Release, cluster_node, enable
from simnode.node import Node
from tests.reliability import CURRENT, NEXT
from torcx_tectonic.state import Run

from . import nodestate
from .flows import last_run, unit_result

RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
NO_REBOOT = {"bootstrap": {"reboot": "no", "upgrade_os": "no"}}


def _json(kind: str) -> Callable[[bytes], bool]:
    return lambda data: json.loads(data).get("kind") == kind


def test_a_reader_never_sees_an_empty_or_short_file(bundle: Path) -> None:
    with cluster_node(bundle, RELEASES, os_version=CURRENT, settings=NO_REBOOT,
                      files=nodestate.NO_START_LIMIT) as (cluster, node):
        node.boot()
        assert node.systemctl("start", "torcx-bootstrap.target", check=False).returncode == 0
        addons = {hashlib.sha512(cluster.bucket.addon_path("amd64-usr", CURRENT, v).read_bytes()).hexdigest()
                  for v in ("1.12", "17.03", "17.06")}
        whole: dict[str, Callable[[bytes], bool]] = {
            "/etc/torcx/profiles/tectonic.json": _json("profile-manifest-v0"),
            "/etc/torcx/next-profile": lambda data: data == b"tectonic\n",
            "/var/lib/torcx-tectonic/runs/new-kubelet.json": _json(Run.KIND),
            "/var/lib/torcx-tectonic/docker-reset-needed": lambda data: set(json.loads(data)) == {"from", "to"},
            "/var/lib/node_exporter/textfile_collector/torcx_tectonic.prom":
                lambda data: data.endswith(b"\n") and b"torcx_tectonic_verdict_ok" in data,
            f"/var/lib/torcx/store/{CURRENT}/docker:17.06.torcx.tgz":
                lambda data: hashlib.sha512(data).hexdigest() in addons,
            f"/var/lib/torcx/store/{CURRENT}/docker:17.03.torcx.tgz":
                lambda data: hashlib.sha512(data).hexdigest() in addons,
        }
        seen: dict[str, set[bytes]] = {path: set() for path in whole}
        broken: list[str] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for path, check in whole.items():
                    try:
                        data = node.host_path(path).read_bytes()
                    except FileNotFoundError:
                        continue
                    seen[path].add(data)
                    try:
                        if not check(data):
                            broken.append(f"{path}: {data[:80]!r}")
                    except ValueError:
                        broken.append(f"{path}: {data[:80]!r}")

        reader = threading.Thread(target=read)
        reader.start()
        try:
            # Kubernetes 1.9 wants docker 17.06, 1.8 wants 17.03: every run replaces the profile, the marker,
            # the run record and the metrics, and the first one adds an addon
            for tag in ("v1.9.1_coreos.0", "v1.8.4_coreos.0", "v1.9.1_coreos.0", "v1.8.4_coreos.0"):
                node.write("/etc/kubernetes/kubelet.env", f"KUBELET_IMAGE_TAG={tag}\n")
                node.systemctl("start", "torcx-new-kubelet-addons.service")
                node.wait_for(lambda: unit_result(node, "torcx-new-kubelet-recheck.service")[0] == "inactive",
                              timeout=60, what="the re-check")
                assert last_run(node, "new-kubelet")["result"] == "ok"
        finally:
            stop.set()
            reader.join(30)
        assert broken == []
        assert len(seen["/etc/torcx/profiles/tectonic.json"]) >= 2  # it read while the profile changed
        assert len(seen["/var/lib/torcx-tectonic/runs/new-kubelet.json"]) >= 4


def _bootstrap_held(node: Node, unit: str, command: str, syscall: str, nth: int) -> None:
    """Start the bootstrap with the step ``unit`` held at the entry of its
    ``nth`` call of ``syscall`` (strace's delay injection, from a test drop-in)."""
    node.write(f"/etc/systemd/system/{unit}.d/90-tt-hold.conf", (
        "# integration test only: the step held at a system call, so the test can cut the power there\n"
        "[Service]\nSystemCallFilter=\nExecStart=\n"
        f"ExecStart=/usr/bin/strace -qq -o /dev/null -e trace={syscall} "
        f"-e inject={syscall}:delay_enter=600000000:when={nth} {command}\n"))
    node.systemctl("daemon-reload")
    node.systemctl("start", "--no-block", "torcx-bootstrap.target")


def test_a_power_cut_right_after_kubelet_env_still_starts_the_kubelet(bundle: Path) -> None:
    with cluster_node(bundle, RELEASES, os_version=CURRENT, settings=NO_REBOOT) as (cluster, node):
        node.boot()
        # the kubelet-env step renames its run record, then kubelet.env, then its record: held at the third
        _bootstrap_held(node, "torcx-bootstrap-kubelet-env.service",
                        "/usr/libexec/torcx-tectonic/kubelet-env --flow bootstrap --step kubelet-env", "rename", 3)
        node.wait_for(lambda: node.exists("/etc/kubernetes/kubelet.env"), timeout=120, what="kubelet.env")
        assert not node.exists("/run/torcx-tectonic/bootstrap/kubelet-env.json")  # held before its record
        node.cut_power()
        node.host_path("/etc/systemd/system/torcx-bootstrap-kubelet-env.service.d/90-tt-hold.conf").unlink()

        # kubelet.env exists, so no bootstrap step runs again: the kubelet was enabled before it was written
        enable(node, "torcx-bootstrap.target")
        node.boot_again()
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", timeout=60, what="the kubelet")
        assert not node.exists("/run/torcx-tectonic/bootstrap")
        assert nodestate.observe(node, "bootstrap").temporary == []


def test_a_power_cut_before_the_addon_is_renamed_is_completed_by_the_next_boot(bundle: Path) -> None:
    with cluster_node(bundle, RELEASES, os_version=CURRENT, settings=NO_REBOOT) as (cluster, node):
        node.boot()
        # the addon step renames its run record, then the addon: held at the addon's rename
        _bootstrap_held(node, "torcx-bootstrap-addons.service",
                        "/usr/libexec/torcx-tectonic/install-addons --flow bootstrap --step addons", "rename", 2)
        store = node.host_path(f"/var/lib/torcx/store/{CURRENT}")
        node.wait_for(lambda: store.is_dir() and any(p.name.endswith(".tmp") for p in store.iterdir()),
                      timeout=120, what="the addon's temporary file")
        node.cut_power()
        (left,) = [p.name for p in store.iterdir()]
        assert left.startswith(".docker:17.03.torcx.tgz.") and left.endswith(".tmp")  # hidden: torcx skips it
        node.host_path("/etc/systemd/system/torcx-bootstrap-addons.service.d/90-tt-hold.conf").unlink()

        # kubelet.env is missing: the bootstrap runs again at boot, removes what the cut left, and converges
        enable(node, "torcx-bootstrap.target")
        node.boot_again(timeout=120)
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", timeout=60, what="the kubelet")
        assert last_run(node, "bootstrap")["result"] == "ok"
        assert [p.name for p in store.iterdir()] == ["docker:17.03.torcx.tgz"]
        assert nodestate.observe(node, "bootstrap").temporary == []
