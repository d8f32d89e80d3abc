"""Every node's answer in Kubernetes: three nodes in real systemd label their own Node objects.

Three simulated nodes join one api-server stand-in (TLS, each with its own
kubelet certificate ``CN=system:node:<name>``), one after another: one with
no update pending, one whose OS update's manifest offers its Docker, one
whose next OS lacks it. The real ``kubectl`` then lists them with both
columns and selects the worklist; fixing the bucket and `torcx-tectonic
retry new-os` on the third node empties it. The stand-in refuses, as the
NodeRestriction admission plugin does, a node labelling another node. An
api-server that is down fails no flow, and the next run catches up.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from simnode.cluster import BOARD, CLUO_PREFIX, Cluster, Release
from simnode.node import Node

from .flows import KUBECTL, failure, kubectl, last_run, run_result, step_done, unit_result
from .test_new_os_and_kubelet import apply_update

CURRENT, NEXT, LACKING = "1632.3.0", "1688.5.3", "1688.6.0"
#: The third node's next OS offers only a Docker that Kubernetes 1.8 does not accept here.
RELEASES = [Release(CURRENT, ["17.03"]), Release(NEXT, ["17.03"]), Release(LACKING, ["1.12"])]
RUNTIME, NEXT_BOOT, REASON = "torcx-tectonic.io/runtime", "torcx-tectonic.io/next-boot", "torcx-tectonic.io/reason"
#: Which OS update each node gets (None: none pending).
NODES = {"node-1": None, "node-2": NEXT, "node-3": LACKING}
def rows(table: str) -> dict[str, list[str]]:
    """kubectl's table by node name: each row's cells."""
    lines = table.strip().splitlines()
    return {line.split()[0]: line.split() for line in lines[1:]}


@contextlib.contextmanager
def answered(cluster: Cluster, bundle: Path, name: str) -> Iterator[Node]:
    """The node booted; with an update, once its new-OS run ended and its labels say so."""
    update = NODES[name]
    files = {**cluster.node_files(node=name), **cluster.bootstrapped_files(CURRENT)}
    with Node(bundle=bundle, os_version=CURRENT, files=files) as node:
        node.boot()
        if update is None:
            node.wait_for(lambda: NEXT_BOOT in cluster.api.labels(name), timeout=60, what=f"{name}'s labels at boot")
        else:
            cluster.api.update_node_metadata(name, set_labels={f"{CLUO_PREFIX}/before-reboot": "true"},
                                             source="operator")
            apply_update(node, update)
            node.wait_for(lambda: node.exists("/var/lib/torcx-tectonic/runs/new-os.json")
                          and last_run(node, "new-os")["result"] in ("ok", "failed"), timeout=90,
                          what=f"{name}'s new-OS run")
            node.wait_for(lambda: update in cluster.api.annotations(name).get(REASON, ""), timeout=60,
                          what=f"{name}'s labels after its new-OS run")
        yield node


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (make deps installs kubernetes-client)")
def test_kubectl_lists_the_fleet_and_selects_the_nodes_whose_next_boot_is_not_ok(bundle: Path,
                                                                                 tmp_path: Path) -> None:
    with Cluster(tmp_path, RELEASES, mappings={"1.8": ["17.03"]}) as cluster:
        for name in ("node-1", "node-2"):  # two cores: one node at a time; their answers stay in the cluster
            with answered(cluster, bundle, name):
                pass
        with answered(cluster, bundle, "node-3") as third:
            fleet = kubectl(cluster, tmp_path, "get", "nodes", "-L", f"{RUNTIME},{NEXT_BOOT}")
            print(f"\n$ kubectl get nodes -L {RUNTIME},{NEXT_BOOT}\n{fleet}")
            assert fleet.splitlines()[0].split()[-2:] == ["RUNTIME", "NEXT-BOOT"]
            assert {name: cells[-2:] for name, cells in rows(fleet).items()} == {
                "node-1": ["docker-17.03", "ok"], "node-2": ["docker-17.03", "ok"],
                "node-3": ["docker-17.03", "not-ok"]}
            worklist = kubectl(cluster, tmp_path, "get", "nodes", "-l", f"{NEXT_BOOT}=not-ok")
            print(f"$ kubectl get nodes -l {NEXT_BOOT}=not-ok\n{worklist}")
            assert list(rows(worklist)) == ["node-3"]
            reason = cluster.api.annotations("node-3")[REASON]
            assert f"which is in none of the stores OS {LACKING} reads" in reason
            # only its own keys: what the cluster set on the node is still there
            assert cluster.api.labels("node-3")["kubernetes.io/hostname"] == "node-3"
            patches = [r for r in cluster.api.requests_for("/api/v1/nodes/node-3", method="PATCH")
                       if r.status == 200]
            assert patches and all(r.headers.get("Content-Type") == "application/merge-patch+json" for r in patches)

            # the operator fixes the bucket and tries at once: the worklist empties
            cluster.bucket.add_release(BOARD, LACKING, ["1.12", "17.03"], None)
            retried = third.run("torcx-tectonic", "retry", "new-os")
            assert "started torcx-new-os.target (its backoff ended)" in retried.stdout
            third.wait_for(lambda: step_done(third, "new-os", "annotate"), timeout=90, what="the retried run")
            third.wait_for(lambda: cluster.api.labels("node-3").get(NEXT_BOOT) == "ok", timeout=60,
                           what="node-3's label to follow")
            assert rows(kubectl(cluster, tmp_path, "get", "nodes", "-l", f"{NEXT_BOOT}=not-ok")) == {}


def patch_as(cluster: Cluster, stem: str, node: str, labels: dict[str, str]) -> int:
    """PATCH ``node``'s labels with the client certificate ``stem`` (a kubelet's); the status code."""
    context = cluster.pki.client_context()
    context.load_cert_chain(str(cluster.pki.dir / f"{stem}.crt"), str(cluster.pki.dir / f"{stem}.key"))
    request = urllib.request.Request(f"{cluster.api.url}/api/v1/nodes/{node}", method="PATCH",
                                     data=json.dumps({"metadata": {"labels": labels}}).encode(),
                                     headers={"Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_a_node_may_label_only_itself_and_not_under_kubernetes_io(tmp_path: Path) -> None:
    with Cluster(tmp_path, RELEASES) as cluster:
        cluster.node_files(node="node-2")  # node-2 joins: its Node object and its kubelet certificate
        assert patch_as(cluster, "kubelet-node-2", "node-2", {NEXT_BOOT: "ok"}) == 200
        assert patch_as(cluster, "kubelet-node-2", "node-1", {NEXT_BOOT: "not-ok"}) == 403
        assert patch_as(cluster, "kubelet-node-2", "node-2", {"node-role.kubernetes.io/master": ""}) == 403
        assert patch_as(cluster, "kubelet-node-2", "node-2", {NEXT_BOOT: "x" * 64}) == 422
        assert NEXT_BOOT not in cluster.api.labels("node-1")
        assert cluster.api.labels("node-2")[NEXT_BOOT] == "ok"


def test_an_api_server_that_is_down_fails_no_flow_and_the_next_run_catches_up(bundle: Path, tmp_path: Path) -> None:
    with Cluster(tmp_path, RELEASES, mappings={"1.8": ["17.03"]}, apiserver_up=False) as cluster:
        files = {**cluster.node_files(), **cluster.bootstrapped_files(CURRENT)}
        with Node(bundle=bundle, os_version=CURRENT, files=files) as node:
            node.boot()
            node.wait_for(lambda: run_result(node, "node-labels") == "failed", timeout=60, what="labels at boot")
            assert f"cannot reach {cluster.api.url}" in failure(node, "node-labels", "patch")
            kubelet_env = node.read("/etc/kubernetes/kubelet.env")
            node.write("/etc/kubernetes/kubelet.env", "# rewritten\n" + kubelet_env)
            node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=60, what="the new-kubelet run")
            # (a run that begins while the last one's units still end would merge into their jobs)
            node.wait_for(lambda: run_result(node, "node-labels") == "failed"
                          and last_run(node, "node-labels")["started"] > last_run(node, "new-kubelet")["started"]
                          and unit_result(node, "torcx-new-kubelet-recheck.service")[0] == "inactive"
                          and unit_result(node, "torcx-node-labels-patch.service")[0] == "failed",
                          timeout=60, what="labels after the run, and the run's units, to end")
            cluster.api.start()
            node.write("/etc/kubernetes/kubelet.env", "# rewritten again\n" + kubelet_env)
            node.wait_for(lambda: cluster.api.labels("node-1").get(NEXT_BOOT) == "ok", timeout=60,
                          what="the next run to catch up")
            assert run_result(node, "new-kubelet") == "ok"
            assert cluster.api.labels("node-1")[RUNTIME] == "docker-17.03"
