"""Pins and rollbacks on a node with a real systemd (issue 18, items 1 and 2).

The pin is set on the node's own Node object in the api-server stand-in
with the request ``kubectl annotate node`` sends (a JSON merge patch of
``metadata.annotations``, over TLS, with the kubeconfig's credentials).
kubectl itself does not run against the stand-in yet: it asks the
discovery endpoints (/api, /apis) first, which the stand-in does not serve.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from simnode.cluster import ANNOTATION, CLUO_PREFIX, NODE_NAME, Cluster, Release, enable, flatcar_node
from simnode.flatcar import LEVELLED
from simnode.node import Node
from torcx_tectonic.cluster.view import PIN_ANNOTATION

from .flows import KUBECTL, failure, kubectl, last_run, run_result, status, step_done
from .test_new_os_and_kubelet import CURRENT, NEXT, apply_update, bootstrapped, selected, store_file
from .test_sysext_backend import CURRENT as FLATCAR
from .test_sysext_backend import LINK, docker_says

THIRD = "1745.7.0"
LABEL = f"{CLUO_PREFIX}/before-reboot"
KUBE_1_9 = "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n"


def annotate(cluster: Cluster, tmp_path: Path, value: str) -> None:
    """The operator pins the node: the real ``kubectl annotate``."""
    kubectl(cluster, tmp_path, "annotate", "node", NODE_NAME, f"{PIN_ANNOTATION}={value}", "--overwrite")


def docker_started(node: Node) -> tuple[str, str]:
    """The version the Docker torcx applied says it is, and what it found in /var/lib/docker."""
    node.wait_for(lambda: node.exists("/run/docker-version"), timeout=60, what="Docker to start")
    return node.read("/run/docker-version").strip(), node.read("/run/docker-saw") if node.exists(
        "/run/docker-saw") else "(no data directory)"


def reboot(node: Node, os_version: str | None = None) -> None:
    node.shutdown()
    node.boot_again(os_version=os_version, update_engine={"mode": "none"})


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (make deps installs kubernetes-client)")
def test_an_annotated_pin_holds_across_an_os_update_and_one_the_next_os_lacks_blocks_the_reboot(
        bundle: Path, tmp_path: Path) -> None:
    releases = [Release(CURRENT, ["1.12", "17.03", "17.06"]), Release(NEXT, ["1.12", "17.03", "17.06"]),
                Release(THIRD, ["17.03", "17.06"])]
    with bootstrapped(bundle, tmp_path, releases) as (cluster, node):
        enable(node, "docker.service")
        node.boot()
        annotate(cluster, tmp_path, "1.12")  # Kubernetes 1.8 prefers 17.03; the operator holds the node at 1.12
        operator = cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=1)
        apply_update(node)
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=90, what="the new-OS flow")
        assert operator.wait(timeout=30)
        assert cluster.api.annotations()[ANNOTATION] == "true"
        assert selected(node) == "1.12"
        assert store_file(node, NEXT, "1.12").is_file() and store_file(node, CURRENT, "1.12").is_file()
        assert "pinned to 1.12 (node node-1 annotation torcx-tectonic.io/pin-runtime)" in node.journal(
            "torcx-new-os-docker-version.service")
        code, document = status(node)
        assert (code, document["verdict"]["next"]["runtime_version"]) == (0, "1.12"), document
        assert f"pinned to 1.12 (node {NODE_NAME} annotation {PIN_ANNOTATION})" in document["verdict"]["next"]["notes"]
        assert (document["runtime"]["pin"], document["runtime"]["pin_source"]) == (
            "1.12", f"node {NODE_NAME} annotation {PIN_ANNOTATION}")
        cluster.api.grant_reboot(f"{CLUO_PREFIX}/", [ANNOTATION])

        # The OS update's reboot; then Kubernetes 1.9, whose mappings prefer 17.06: the pin still holds.
        reboot(node, NEXT)
        assert docker_started(node)[0] == "Docker version 1.12, build torcx-test"
        node.write("/etc/kubernetes/kubelet.env", KUBE_1_9)
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=90, what="the new-kubelet flow")
        assert selected(node) == "1.12"
        assert not store_file(node, NEXT, "17.06").exists()

        # The next OS offers no 1.12: the runtime step fails naming the pin and the offer, and no success
        # annotation lets the operator reboot the node.
        cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=0.5)
        apply_update(node, THIRD)
        node.wait_for(lambda: run_result(node, "new-os") == "failed", timeout=90, what="the pinned runtime step")
        error = failure(node, "new-os", "docker-version")
        assert (f"docker is pinned to 1.12 (node {NODE_NAME} annotation {PIN_ANNOTATION}), which is not offered: "
                f"the manifest for OS {THIRD} offers 17.03, 17.06") in error, error
        time.sleep(3)  # let anything that would wrongly follow happen
        assert ANNOTATION not in cluster.api.annotations()
        assert cluster.api.labels().get(LABEL) == "true"  # the operator waits for the hook, in vain
        code, document = status(node)
        verdict = document["verdict"]["next"]
        assert (code, verdict["os"], verdict["ok"]) == (1, THIRD, False), document
        assert verdict["reason"].startswith(f"docker is pinned to 1.12 (node {NODE_NAME} annotation "), verdict
        node.shutdown()


def test_rollback_after_a_kubernetes_upgrade_boots_the_previous_docker_on_emptied_data(
        bundle: Path, tmp_path: Path) -> None:
    with bootstrapped(bundle, tmp_path) as (cluster, node):
        enable(node, "docker.service")
        node.boot()
        assert docker_started(node)[0] == "Docker version 17.03, build torcx-test"
        # Kubernetes 1.9: Docker 17.06, applied at the next boot on an emptied /var/lib/docker
        node.write("/etc/kubernetes/kubelet.env", KUBE_1_9)
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=90, what="the new-kubelet flow")
        assert selected(node) == "17.06"
        reboot(node)
        assert docker_started(node) == ("Docker version 17.06, build torcx-test", "")
        node.write("/var/lib/docker/containers/written-by-17.06", "newer format")

        result = node.run("torcx-tectonic", "rollback", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("torcx-tectonic rollback: docker 17.06 → 17.03, applied at the next boot\n")
        assert f"kubectl annotate node {NODE_NAME} {PIN_ANNOTATION}=17.03" in result.stdout
        assert selected(node) == "17.03"
        assert json.loads(node.read("/var/lib/torcx-tectonic/docker-reset-needed")) == {"from": "17.06",
                                                                                         "to": "17.03"}
        code, document = status(node)
        run = document["flows"]["rollback"]["last_run"]
        assert run["result"] == "ok" and "rolled back docker from 17.06 to 17.03" in run["note"], run
        assert document["runtime"]["reset_pending"] == "17.06 → 17.03"

        # the next boot: the data 17.06 wrote is gone before 17.03 starts, and the stand-in torcx applied 17.03
        reboot(node)
        assert docker_started(node) == ("Docker version 17.03, build torcx-test", "")
        assert last_run(node, "docker-reset")["result"] == "ok"
        assert not node.exists("/var/lib/torcx-tectonic/docker-reset-needed")
        code, document = status(node)
        assert document["runtime"]["booted"] == "17.03"

        # nothing kept to go back to any more: it says so and changes nothing
        node.run("rm", f"/var/lib/torcx/store/{CURRENT}/docker:17.06.torcx.tgz")
        again = node.run("torcx-tectonic", "rollback", check=False)
        assert again.returncode == 1 and "is no longer kept" in again.stderr, again.stderr
        assert selected(node) == "17.03"
        node.shutdown()


#: Docker as a unit of the node's own (the test images bring only the binary): started after the merged
#: /usr, it notes what it found in its data directory and which version it is, as the torcx test addons do.
DOCKER_UNIT = """[Unit]
Description=Docker from the merged system extension (test)
After=systemd-sysext.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /var/lib/docker && ls -A /var/lib/docker > /run/docker-saw; \\
  /usr/bin/docker > /run/docker-version'
"""


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs (make test installs it)")
def test_rollback_on_a_flatcar_node_links_the_kept_image_and_systemd_sysext_merges_it(bundle: Path) -> None:
    with flatcar_node(bundle, {"24.0.9": LEVELLED, "25.0.3": LEVELLED}, os_version=FLATCAR,
                      settings={"bootstrap": {"reboot": "no", "upgrade_os": "no"}},
                      files={"/etc/systemd/system/docker.service": DOCKER_UNIT}) as (_, node):
        enable(node, "docker.service", unit_dir="/etc/systemd/system")
        node.boot()
        assert node.systemctl("start", "torcx-bootstrap.target", check=False, timeout=120).returncode == 0
        node.write("/etc/kubernetes/kubelet.env", KUBE_1_9)
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=90, what="the new-kubelet flow")
        assert os.readlink(node.host_path(LINK)) == "/opt/extensions/docker/docker-25.0.3-x86-64.raw"
        reboot(node)
        node.wait_for(lambda: docker_says(node) == "docker 25.0.3", timeout=60, what="systemd-sysext to merge 25.0.3")
        assert docker_started(node) == ("docker 25.0.3", "")
        node.write("/var/lib/docker/containers/written-by-25.0.3", "newer format")

        result = node.run("torcx-tectonic", "rollback", check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("torcx-tectonic rollback: docker 25.0.3 → 24.0.9, applied at the next boot\n")
        assert os.readlink(node.host_path(LINK)) == "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
        assert json.loads(node.read("/var/lib/torcx-tectonic/docker-reset-needed")) == {"from": "25.0.3",
                                                                                         "to": "24.0.9"}
        reboot(node)
        node.wait_for(lambda: docker_says(node) == "docker 24.0.9", timeout=60, what="systemd-sysext to merge 24.0.9")
        assert docker_started(node) == ("docker 24.0.9", "")  # the data 25.0.3 wrote is gone before it started
        assert not node.exists("/var/lib/torcx-tectonic/docker-reset-needed")
        code, document = status(node)
        assert document["flows"]["rollback"]["last_run"]["result"] == "ok"
        assert document["verdict"]["current"]["runtime_version"] == "24.0.9"
        node.shutdown()
