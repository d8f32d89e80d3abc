"""`make node`: one simulated Container Linux node through its whole life.

A real systemd 252 in systemd-nspawn with the bundle installed by `make
install`, a stand-in update_engine on its D-Bus system bus, an HTTPS release
bucket with really signed manifests and real torcx addons, and a TLS
api-server stand-in that plays the update operator. The node lives through:

1. its first boot with torcx-bootstrap.target enabled (as Ignition does): it
   updates its OS, picks Docker for the cluster's Kubernetes, installs it for
   both OS versions, writes kubelet.env and reboots;
2. the second boot, into the new OS: the kubelet runs, the bootstrap stays idle;
3. a Kubernetes upgrade (kubelet.env changes): the matching Docker arrives;
4. the next OS update: its Docker is fetched, old stores are collected, and
   the node is annotated once the operator labels it;
5. the reboot the operator then orders: Docker's data is emptied before the
   new Docker starts, and the node is healthy on the new OS.

Each phase tells what the node did and why (its flows' runs and the steps'
own journal lines) and ends with `torcx-tectonic status`, as an operator
would read it. The run ends with the list of checks and exits non-zero if
any failed, or if the status of a healthy node does not exit 0.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .addons import addon_filename, make_addon
from .cluster import ANNOTATION, CLUO_PREFIX, Cluster, Release, build_bundle, enable
from .node import REBOOT_EXIT_CODE, Node, NodeError

FIRST, SECOND, THIRD = "1632.3.0", "1688.5.3", "1745.7.0"
DOCKERS = ["1.12", "17.03", "17.06"]
#: What the OS's own Docker (1.12, the vendor addon com.coreos.cl) left in its data directory.
DOCKER_DATA = {"/var/lib/docker/containers/written-by-docker-1.12": "old"}
#: The OS image's Docker: an addon in the vendor store, which the vendor profile selects. Like every
#: test addon, the unit it brings notes in /run/docker-saw and /run/docker-version what it found and
#: which version it is; torcx (the nodes' stand-in for its generator) applies it at boot.
VENDOR_DOCKER = addon_filename("docker", "com.coreos.cl")
RUNS = "/var/lib/torcx-tectonic/runs"


class Story:
    """What `make node` prints: phases, what happened, checks."""

    def __init__(self) -> None:
        self.checks: list[tuple[bool, str]] = []

    def phase(self, title: str) -> None:
        print(f"\n\033[1m== {title}\033[0m", flush=True)

    def say(self, text: str, indent: str = "  ") -> None:
        for line in text.rstrip().splitlines():
            print(indent + line)
        sys.stdout.flush()

    def check(self, ok: bool, what: str) -> bool:
        self.checks.append((ok, what))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)
        return ok

    def wait(self, node: Node, condition: Callable[[], bool], what: str, timeout: float = 90) -> bool:
        try:
            node.wait_for(condition, timeout=timeout, what=what)
            return True
        except NodeError as err:
            self.say(str(err), "    ")
            return False


def run_record(node: Node, flow: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(node.read(f"{RUNS}/{flow}.json")))
    except (FileNotFoundError, NodeError):
        return None


def tell_run(story: Story, node: Node, flow: str, identifier: str) -> None:
    """The flow's last run, step by step, and what its steps logged."""
    run = run_record(node, flow)
    if run is None:
        story.say(f"{flow}: did not run")
        return
    took = f" in {float(run['finished']) - float(run['started']):.1f}s" if run.get("finished") else ""
    story.say(f"{flow} run: {run['result']}{took}" + (f" — {run['note']}" if run.get("note") else ""))
    for step in run["steps"]:
        step_took = f" ({step['finished'] - step['started']:.2f}s)" if step.get("finished") else ""
        story.say(f"  {step['step']}: {step['result']}{step_took}" + (f": {step['message']}" if step.get("message")
                                                                      else ""))
    story.say("what the steps said (journal):")
    idents = [arg for s in run["steps"] for arg in ("-t", f"{identifier}-{s['step']}")]
    lines = node.journal(extra=["-o", "json", f"--since=@{int(float(run['started']))}", *idents]).splitlines()
    for line in lines:
        entry = json.loads(line)
        story.say(f"  {entry.get('SYSLOG_IDENTIFIER', '?').removeprefix('torcx-')}: {entry.get('MESSAGE', '')}")


def tell_status(story: Story, node: Node, healthy: bool) -> None:
    """`torcx-tectonic status`, as the operator runs it; on a healthy node it exits 0."""
    story.say("$ torcx-tectonic status")
    result = node.run("torcx-tectonic", "status", check=False)
    story.say(result.stdout + result.stderr, "  | ")
    if healthy:
        story.check(result.returncode == 0, "torcx-tectonic status: both verdicts ok (exit status 0)")


def main() -> int:
    story = Story()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-node-") as tmp:
        work = Path(tmp)
        story.phase("building the bundle (make install DESTDIR=...) and the stand-in cluster")
        bundle = build_bundle(work / "bundle")
        releases = [Release(v, DOCKERS) for v in (FIRST, SECOND, THIRD)]
        with Cluster(work / "cluster", releases) as cluster:
            story.say(f"release bucket: {cluster.bucket.base_url} (manifests signed by {cluster.signer.fingerprint})")
            story.say(f"api-server:     {cluster.api.url} (Kubernetes v1.8.4+coreos.0, client-certificate auth)")
            files = {**cluster.node_files({"bootstrap": {"os_update_attempts": "3"}}), **DOCKER_DATA}
            update = {"mode": "update", "new_version": SECOND, "step_seconds": 0.1}
            make_addon(work / VENDOR_DOCKER, "docker", "com.coreos.cl")
            with Node(bundle=bundle, os_version=FIRST, files=files, update_engine=update,
                      vendor_addons={VENDOR_DOCKER: work / VENDOR_DOCKER}) as node:
                enable(node, "torcx-bootstrap.target")
                enable(node, "docker.service")
                live(story, cluster, node)
    failed = [what for ok, what in story.checks if not ok]
    story.phase(f"done in {time.monotonic() - started:.1f}s: {len(story.checks) - len(failed)} of "
                f"{len(story.checks)} checks passed")
    for what in failed:
        print(f"  FAILED: {what}")
    return 1 if failed else 0


def docker_started(story: Story, node: Node, version: str, why: str = "") -> None:
    """The Docker torcx applied at this boot started, and on what data."""
    story.wait(node, lambda: node.exists("/run/docker-version"), "Docker to start")
    started = node.read("/run/docker-version").strip()
    saw = node.read("/run/docker-saw") if node.exists("/run/docker-saw") else None
    story.check(started == f"Docker version {version}, build torcx-test" and saw == "",
                f"torcx applied Docker {version} and it started on an emptied /var/lib/docker {why}".rstrip())


def live(story: Story, cluster: Cluster, node: Node) -> None:
    story.phase(f"1. first boot on Container Linux {FIRST}: Ignition enabled torcx-bootstrap.target")
    started = time.monotonic()
    node.boot(wait_ready=False)  # the first boot ends in the bootstrap's reboot
    try:
        code = node.wait_exit(180)
    except NodeError as err:
        story.say(str(err))
        code = -1
    took = time.monotonic() - started
    tell_run(story, node, "bootstrap", "torcx-bootstrap")
    story.check(code == REBOOT_EXIT_CODE, f"the node bootstrapped and asked to reboot ({took:.1f}s after power-on)")
    run = run_record(node, "bootstrap") or {}
    story.check(run.get("result") == "rebooting", "its run record says it ended in a reboot, and why")
    story.check("Failed with result" not in node.journal(extra=["-u", "torcx-*"]),
                "no torcx unit failed, not even the one the reboot stopped")
    env = node.host_path("/etc/kubernetes/kubelet.env").read_text()
    story.check("KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in env, "kubelet.env carries the cluster's Kubernetes version")
    for os_version in (FIRST, SECOND):
        story.check(node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.03.torcx.tgz").is_file(),
                    f"Docker 17.03 is in the versioned store of OS {os_version}")
    story.check(len(cluster.addon_downloads()) == 1, "the addon was downloaded once for both OS versions")

    story.phase(f"2. second boot, into Container Linux {SECOND}")
    node.boot_again(os_version=SECOND, update_engine={"mode": "none"})
    docker_started(story, node, "17.03", "(the data of Docker 1.12 cannot be read by another version)")
    kubelet = node.systemctl("is-active", "kubelet.service", check=False).stdout.strip()
    story.check(kubelet == "active", "the kubelet runs")
    story.check(not node.exists("/run/torcx-tectonic/bootstrap"), "the bootstrap did nothing: kubelet.env exists")
    tell_run(story, node, "docker-reset", "torcx-docker-reset")
    tell_status(story, node, healthy=True)

    story.phase("3. the cluster moves to Kubernetes 1.9 (kubelet.env is rewritten)")
    node.write("/etc/kubernetes/kubelet.env",
               "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    done = story.wait(node, lambda: (run_record(node, "new-kubelet") or {}).get("result") == "ok",
                      "the new-kubelet flow")
    tell_run(story, node, "new-kubelet", "torcx-new-kubelet")
    story.check(done and '"17.06"' in node.read("/etc/torcx/profiles/tectonic.json"),
                "Docker 17.06 is installed and selected for Kubernetes 1.9")
    story.check('"to": "17.06"' in node.read("/var/lib/torcx-tectonic/docker-reset-needed"),
                "/var/lib/docker will be emptied before Docker 17.06 starts")
    tell_status(story, node, healthy=True)

    story.phase(f"4. update_engine applies Container Linux {THIRD}; the operator labels the node 5s later")
    operator = cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=5)
    node.set_update_engine({"mode": "update", "new_version": THIRD, "step_seconds": 0.1})
    node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
             "AttemptUpdate")
    done = story.wait(node, lambda: cluster.api.annotations().get(ANNOTATION) == "true", "the annotation")
    story.wait(node, lambda: (run_record(node, "new-os") or {}).get("result") == "ok", "the new-OS run to end")
    tell_run(story, node, "new-os", "torcx-new-os")
    story.check(done and operator.at is not None, f"annotated {ANNOTATION}=true under the before-reboot label")
    story.check(node.exists(f"/var/lib/torcx/store/{THIRD}/docker:17.06.torcx.tgz"),
                f"Docker 17.06 is in the versioned store of OS {THIRD}")
    story.check(not node.exists(f"/var/lib/torcx/store/{FIRST}"), f"the store of OS {FIRST} was collected")
    tell_status(story, node, healthy=True)

    story.phase(f"5. the operator reboots the node into Container Linux {THIRD}")
    node.shutdown()
    node.boot_again(os_version=THIRD, update_engine={"mode": "none"})
    docker_started(story, node, "17.06")
    tell_run(story, node, "docker-reset", "torcx-docker-reset")
    story.check(node.systemctl("is-active", "kubelet.service", check=False).stdout.strip() == "active",
                "the kubelet runs")
    tell_status(story, node, healthy=True)


if __name__ == "__main__":
    sys.exit(main())
