"""Races: flows triggered together and in quick succession, a step run twice at once.

The flows share the stores, the profile and the state directory; the flow lock
(a unit) keeps flows from interleaving, the run lock (in the step process)
keeps two copies of a step apart, and the new-kubelet flow's re-check runs it
again when kubelet.env moved on meanwhile. Each case asserts the end state
and that no temporary file is left.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simnode.cluster import ANNOTATION, CLUO_PREFIX, Cluster, Release
from simnode.node import Node
from tests.reliability import CURRENT, NEXT, RACES

from . import nodestate
from .flows import last_run, settled_record, step_done, unit_result

RELEASES = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"])]
LABEL = f"{CLUO_PREFIX}/before-reboot"
KUBELET_ENV = "/etc/kubernetes/kubelet.env"


def kubelet_env(tag: str) -> str:
    return f"KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG={tag}\n"


@contextmanager
def bootstrapped(bundle: Path, tmp_path: Path) -> Iterator[tuple[Cluster, Node]]:
    """A bootstrapped node (docker 17.03, Kubernetes 1.8) whose path units follow kubelet.env and update_engine."""
    with Cluster(tmp_path, RELEASES) as cluster:
        files = {**cluster.node_files(), **cluster.bootstrapped_files(CURRENT), **nodestate.NO_START_LIMIT}
        cluster.api.update_node_metadata("node-1", set_labels={LABEL: "true"}, source="operator")
        with Node(bundle=bundle, os_version=CURRENT, files=files, update_engine={"mode": "none"}) as node:
            node.boot()
            yield cluster, node


def selected(node: Node) -> str:
    profile = json.loads(node.host_path("/etc/torcx/profiles/tectonic.json").read_text())
    return str(profile["value"]["images"][0]["reference"])


def _interval(run: dict[str, Any], steps: tuple[str, ...]) -> tuple[float, float]:
    """When the flow's locked steps ran, first start to last end."""
    entries = [s for s in run["steps"] if s["step"] in steps]
    return min(s["started"] for s in entries), max(s["finished"] for s in entries)


def test_the_three_flows_triggered_at_once(bundle: Path, tmp_path: Path) -> None:
    case = next(c for c in RACES if c.id == "three-flows-together")
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        node.set_update_engine({"mode": "update", "new_version": NEXT, "step_seconds": 0.05})
        # within a moment: an operator starts the bootstrap, update_engine applies an update, kubelet.env changes
        node.systemctl("start", "--no-block", "torcx-bootstrap.target")
        node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                 "AttemptUpdate")
        node.write(KUBELET_ENV, kubelet_env("v1.9.1_coreos.0"))
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=120, what="the new-OS flow")
        node.wait_for(lambda: (settled_record(node, "new-kubelet", "addons") or {}).get("version") == "17.06"
                      and unit_result(node, "torcx-new-kubelet-recheck.service")[0] == "inactive",
                      timeout=120, what="the new-kubelet flow")
        assert not node.exists("/run/torcx-tectonic/bootstrap"), case.name  # bootstrapped: it had nothing to do
        new_os, new_kubelet = last_run(node, "new-os"), last_run(node, "new-kubelet")
        assert (new_os["result"], new_kubelet["result"]) == ("ok", "ok"), (new_os, new_kubelet)
        one = _interval(new_os, ("os-version", "kubelet-version", "docker-version", "addons", "gc"))
        other = _interval(new_kubelet, ("kubelet-version", "os-version", "docker-version", "addons"))
        assert one[1] <= other[0] or other[1] <= one[0], (one, other)  # one after the other, never interleaved
        assert selected(node) == "17.06"
        for os_version in (CURRENT, NEXT):
            assert node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.06.torcx.tgz").is_file()
        assert cluster.api.annotations("node-1").get(ANNOTATION) == "true"
        assert nodestate.observe(node, "new-os").temporary == []


def test_kubelet_env_changed_three_times_in_a_second(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        for tag in ("v1.9.1_coreos.0", "v1.8.5_coreos.0", "v1.9.2_coreos.0"):
            node.write(KUBELET_ENV, kubelet_env(tag))
            time.sleep(0.3)

        def settled() -> bool:
            kube = settled_record(node, "new-kubelet", "kubernetes-version")
            addons = settled_record(node, "new-kubelet", "addons")
            return kube is not None and addons is not None and kube["version"] == "v1.9.2+coreos.0" \
                and addons["version"] == "17.06" and last_run(node, "new-kubelet")["result"] == "ok" \
                and unit_result(node, "torcx-new-kubelet-recheck.service")[0] == "inactive" \
                and unit_result(node, "torcx-new-kubelet-addons.service")[0] == "inactive"

        node.wait_for(settled, timeout=120, what="the flow for the last kubelet.env")
        assert selected(node) == "17.06"
        assert node.host_path(f"/var/lib/torcx/store/{CURRENT}/docker:17.06.torcx.tgz").is_file()
        assert nodestate.observe(node, "new-kubelet").temporary == []


def test_the_same_step_started_twice_by_hand_at_once(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        node.systemctl("stop", "torcx-new-kubelet.path")
        node.write(KUBELET_ENV, kubelet_env("v1.9.1_coreos.0"))
        node.systemctl("start", "torcx-new-kubelet-docker-version.service")  # the steps before it, as the flow runs
        cluster.bucket.set_fault("/addons/", delay=1)  # both copies are under way before either has the addon
        command = ("/usr/libexec/torcx-tectonic/install-addons", "--flow", "new-kubelet", "--step", "addons")
        results: list[tuple[int, str]] = []

        def by_hand() -> None:
            done = node.run(*command, check=False, timeout=120)
            results.append((done.returncode, done.stderr))

        copies = [threading.Thread(target=by_hand) for _ in range(2)]
        for copy in copies:
            copy.start()
        for copy in copies:
            copy.join(150)
        assert [code for code, _ in results] == [0, 0], results
        waited = [err for _, err in results if "waits for another process of its flow" in err]
        assert len(waited) == 1, results  # the second waited for the first: the run lock
        assert len(cluster.addon_downloads()) == 1  # and then found the addon in place
        run = last_run(node, "new-kubelet")
        assert [(s["step"], s["result"]) for s in run["steps"]][-1] == ("addons", "ok"), run
        assert selected(node) == "17.06"
        assert nodestate.observe(node, "new-kubelet").temporary == []


def test_the_same_unit_started_twice_at_once_runs_once(bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        node.systemctl("stop", "torcx-new-kubelet.path")
        node.write(KUBELET_ENV, kubelet_env("v1.9.1_coreos.0"))
        node.systemctl("start", "torcx-new-kubelet-docker-version.service")
        cluster.bucket.set_fault("/addons/", delay=1)
        unit = "torcx-new-kubelet-addons.service"
        starts = [threading.Thread(target=node.systemctl, args=("start", unit)) for _ in range(2)]
        for start in starts:
            start.start()
        for start in starts:
            start.join(150)
        assert node.journal(unit).count("Starting torcx-new-kubelet-addons.service") == 1
        assert len(cluster.addon_downloads()) == 1 and selected(node) == "17.06"
