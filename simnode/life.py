"""`make node`: one simulated Container Linux node through its whole life.

It uses the same harness as the integration tests: systemd 252 booted in
systemd-nspawn with the bundle installed by `make install`, a stand-in
update_engine on the node's D-Bus system bus, an HTTPS release bucket with
really signed manifests and real torcx addons, and an api-server stand-in
over TLS that plays the update operator. Then it lives through:

1. first boot with torcx-bootstrap.target enabled (as Ignition does): the
   node updates its OS, picks Docker for the cluster's Kubernetes, installs
   it for both OS versions, writes kubelet.env and reboots;
2. the second boot, into the new OS: the kubelet runs, bootstrap stays idle;
3. a Kubernetes upgrade (kubelet.env changes): the matching Docker arrives;
4. the next OS update: its Docker is fetched, old stores are collected, and
   the node is annotated once the operator labels it.

Each phase prints what the node logged and recorded; the run ends with a
list of checks and exits non-zero if any failed.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .cluster import ANNOTATION, CLUO_PREFIX, Cluster, Release, build_bundle, enable
from .node import REBOOT_EXIT_CODE, Node, NodeError

FIRST, SECOND, THIRD = "1632.3.0", "1688.5.3", "1745.7.0"
DOCKERS = ["1.12", "17.03", "17.06"]
STATUS = "/usr/libexec/torcx-tectonic/status"


class Demo:
    def __init__(self) -> None:
        self.checks: list[tuple[bool, str]] = []

    def phase(self, title: str) -> None:
        print(f"\n\033[1m== {title}\033[0m", flush=True)

    def check(self, ok: bool, what: str) -> None:
        self.checks.append((ok, what))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", flush=True)

    def show(self, text: str, indent: str = "    ") -> None:
        for line in text.rstrip().splitlines():
            print(indent + line)
        sys.stdout.flush()

    def wait(self, node: Node, condition: Callable[[], bool], what: str, timeout: float = 90) -> bool:
        try:
            node.wait_for(condition, timeout=timeout, what=what)
            return True
        except NodeError as err:
            print(f"    {err}")
            return False


def journal_of(node: Node, prefix: str) -> str:
    lines = node.journal(extra=["-o", "short"]).splitlines()
    return "\n".join(line for line in lines if f" {prefix}" in line)


def store_listing(node: Node) -> str:
    return node.run("sh", "-c", "find /var/lib/torcx/store /etc/torcx -type f | sort").stdout


def main() -> int:
    demo = Demo()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="torcx-tectonic-node-") as tmp:
        work = Path(tmp)
        demo.phase("building the bundle (make install DESTDIR=...) and the stand-in cluster")
        bundle = build_bundle(work / "bundle")
        releases = [Release(v, DOCKERS) for v in (FIRST, SECOND, THIRD)]
        with Cluster(work / "cluster", releases) as cluster:
            print(f"  release bucket: {cluster.bucket.base_url} (manifests signed by {cluster.signer.fingerprint})")
            print(f"  api-server:     {cluster.api.url} (Kubernetes v1.8.4+coreos.0, client-certificate auth)")
            files = {**cluster.node_files({"bootstrap": {"os_update_attempts": "3"}})}
            update = {"mode": "update", "new_version": SECOND, "step_seconds": 0.1}
            with Node(bundle=bundle, os_version=FIRST, files=files, update_engine=update) as node:
                enable(node, "torcx-bootstrap.target")
                run_phases(demo, cluster, node)
    failed = [what for ok, what in demo.checks if not ok]
    demo.phase(f"done in {time.monotonic() - started:.1f}s: {len(demo.checks) - len(failed)} of "
               f"{len(demo.checks)} checks passed")
    for what in failed:
        print(f"  FAILED: {what}")
    return 1 if failed else 0


def run_phases(demo: Demo, cluster: Cluster, node: Node) -> None:
    demo.phase(f"1. first boot on Container Linux {FIRST}: torcx-bootstrap.target is enabled")
    started = time.monotonic()
    node.boot(wait_ready=False)  # the first boot ends in the bootstrap's reboot
    try:
        code = node.wait_exit(180)
    except NodeError as err:
        print(f"    {err}")
        code = -1
    took = time.monotonic() - started
    demo.show(journal_of(node, "torcx-bootstrap-"))
    demo.check(code == REBOOT_EXIT_CODE, f"the node bootstrapped and asked to reboot ({took:.1f}s after power-on)")
    demo.show(store_listing_from_disk(node))
    env = node.host_path("/etc/kubernetes/kubelet.env").read_text()
    demo.check("KUBELET_IMAGE_TAG=v1.8.4_coreos.0" in env, "kubelet.env carries the cluster's Kubernetes version")
    for os_version in (FIRST, SECOND):
        demo.check(node.host_path(f"/var/lib/torcx/store/{os_version}/docker:17.03.torcx.tgz").is_file(),
                   f"Docker 17.03 is in the versioned store of OS {os_version}")

    demo.phase(f"2. second boot, into Container Linux {SECOND}")
    node.boot_again(os_version=SECOND, update_engine={"mode": "none"})
    kubelet = node.systemctl("is-active", "kubelet.service", check=False).stdout.strip()
    demo.check(kubelet == "active", "the kubelet runs")
    skipped = node.systemctl("show", "-p", "ConditionResult", "torcx-bootstrap-os-update.service").stdout.strip()
    demo.check(skipped == "ConditionResult=no", "the bootstrap did nothing: kubelet.env exists")

    demo.phase("3. the cluster moves to Kubernetes 1.9 (kubelet.env is rewritten)")
    node.write("/etc/kubernetes/kubelet.env",
               "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    done = demo.wait(node, lambda: node.exists("/run/torcx-tectonic/new-kubelet/install-addons.json"),
                     "the new-kubelet flow")
    demo.show(journal_of(node, "torcx-new-kubelet-"))
    demo.check(done and '"17.06"' in node.read("/etc/torcx/profiles/tectonic.json"),
               "Docker 17.06 is installed and selected for Kubernetes 1.9")
    demo.check('"to": "17.06"' in node.read("/var/lib/torcx-tectonic/docker-reset-needed"),
               "/var/lib/docker will be emptied before Docker 17.06 starts")

    demo.phase(f"4. update_engine applies Container Linux {THIRD}; the operator labels the node 5s later")
    operator = cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=5)
    node.set_update_engine({"mode": "update", "new_version": THIRD, "step_seconds": 0.1})
    node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
             "AttemptUpdate")
    done = demo.wait(node, lambda: cluster.api.annotations().get(ANNOTATION) == "true", "the annotation")
    demo.show(journal_of(node, "torcx-new-os-"))
    demo.check(done and operator.at is not None, f"annotated {ANNOTATION}=true under the before-reboot label")
    demo.check(node.exists(f"/var/lib/torcx/store/{THIRD}/docker:17.06.torcx.tgz"),
               f"Docker 17.06 is in the versioned store of OS {THIRD}")
    demo.check(not node.exists(f"/var/lib/torcx/store/{FIRST}"), f"the store of OS {FIRST} was collected")
    demo.phase("torcx-tectonic status (what the node recorded in this boot)")
    demo.show(node.run(STATUS, check=False).stdout)


def store_listing_from_disk(node: Node) -> str:
    """The torcx state after the reboot request, read from the node's disk."""
    root = node.root
    paths = sorted(p for base in ("var/lib/torcx", "etc/torcx") for p in (root / base).rglob("*") if p.is_file())
    return "\n".join("/" + str(p.relative_to(root)) for p in paths)


if __name__ == "__main__":
    sys.exit(main())
