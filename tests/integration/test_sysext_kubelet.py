"""The kubelet's image with the sysext backend, on a Flatcar-like node.

The bucket serves the bakery's images, real squashfs images with a signed
``SHA256SUMS``: ``docker-<version>-x86-64.raw`` and
``kubernetes-v<version>-x86-64.raw``, whose ``/usr/bin/kubelet`` prints its
version. The node's own systemd-sysext merges what the product links; the
api-server stand-in answers the version a test gives it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from simnode.cluster import enable, flatcar_node
from simnode.flatcar import LEVELLED
from simnode.node import REBOOT_EXIT_CODE, Node

from .flows import failure, last_run, record, run_result, status, step_done

CURRENT, NEXT = "3815.2.0", "3941.1.0"
KUBELET_LINK, DOCKER_LINK = "/etc/extensions/kubernetes.raw", "/etc/extensions/docker.raw"
STORE = "/opt/extensions/kubernetes"
#: Kubernetes minor → Docker versions (the runtime follows the kubelet's minor).
MAPPINGS = {"1.30": ["24.0.9"], "1.31": ["25.0.3"], "1.32": ["25.0.3"]}
SETTINGS = {"sysext": {"kubernetes": "yes"}, "bootstrap": {"upgrade_os": "no"}}

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs (make test installs it)")


def says(node: Node, program: str) -> str:
    """What the merged image's program prints."""
    result = node.run(f"/usr/bin/{program}", check=False)
    return result.stdout.strip() if result.returncode == 0 else f"(no {program}: {result.stderr.strip()})"


def merged(node: Node) -> None:
    node.wait_for(lambda: "kubernetes" in node.run("systemd-sysext", "status", check=False).stdout, timeout=60,
                  what="systemd-sysext to merge the kubelet image")


def kubelet_tag(node: Node) -> str:
    text = Path(node.host_path("/etc/kubernetes/kubelet.env")).read_text()
    return next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("KUBELET_IMAGE_TAG="))


def follow(node: Node) -> None:
    """What the timer does: the follow-api-server flow, started now."""
    node.systemctl("start", "torcx-follow-api-server.target", timeout=120)


def test_the_kubelet_image_follows_the_api_server_one_minor_at_a_time_with_its_runtime(
        bundle: Path) -> None:
    kubelets = {"v1.30.4": LEVELLED, "v1.31.2": LEVELLED,
                "v1.32.0": f"ID=flatcar\nVERSION_ID={CURRENT}\n"}  # built for one OS release only
    with flatcar_node(bundle, {"24.0.9": LEVELLED, "25.0.3": LEVELLED}, os_version=CURRENT, settings=SETTINGS,
                      kubelet_images=kubelets, kube_version="v1.30.4", mappings=MAPPINGS) as (cluster, node):
        enable(node, "torcx-bootstrap.target")
        node.boot(wait_ready=False)  # the bootstrap links both images and reboots for them
        assert node.wait_exit(180) == REBOOT_EXIT_CODE
        assert os.readlink(node.host_path(KUBELET_LINK)) == f"{STORE}/kubernetes-v1.30.4-x86-64.raw"
        assert os.readlink(node.host_path(DOCKER_LINK)) == "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
        assert last_run(node, "bootstrap")["note"] == (
            "rebooting for: docker changes from the OS's own to 24.0.9, the kubelet changes from none to v1.30.4")
        assert kubelet_tag(node) == "v1.30.4"  # kubelet.env as in the torcx era

        node.boot_again()  # the node's own systemd-sysext merges both
        merged(node)
        assert (says(node, "kubelet"), says(node, "docker")) == ("kubelet v1.30.4", "docker 24.0.9")
        code, document = status(node)
        assert (code, document["kubelet"]["ok"], document["kubelet"]["takes_over"]) == (0, True, None), document
        assert document["kubelet"]["verdict"]["current"]["version"] == "v1.30.4"
        assert node.systemctl("is-active", "torcx-follow-api-server.timer", check=False).stdout.strip() == "active"

        # the control plane goes to 1.31: the kubelet image and the runtime of 1.31, merged at the next boot
        cluster.api.set_version("v1.31.2")
        follow(node)
        assert record(node, "follow-api-server", "kubelet-follow")["after"] == "v1.31.2"
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=120, what="the new-kubelet flow")
        assert os.readlink(node.host_path(KUBELET_LINK)) == f"{STORE}/kubernetes-v1.31.2-x86-64.raw"
        assert os.readlink(node.host_path(DOCKER_LINK)) == "/opt/extensions/docker/docker-25.0.3-x86-64.raw"
        assert says(node, "kubelet") == "kubelet v1.30.4"
        code, document = status(node)
        assert document["kubelet"]["takes_over"].startswith("kubelet v1.31.2 takes over at the next boot"), document
        assert "the new kubelet binary takes over at the next boot" in node.journal(
            extra=["-t", "torcx-new-kubelet-kubelet-image"])

        # the control plane goes to 1.32 before the node rebooted: one minor at a time, so the timer waits
        cluster.api.set_version("v1.32.0")
        follow(node)
        waited = record(node, "follow-api-server", "kubelet-follow")
        assert (waited["after"], kubelet_tag(node)) == ("v1.31.2", "v1.31.2")
        assert "runs from the next boot on" in waited["reason"]

        node.shutdown()
        node.boot_again()
        merged(node)
        assert (says(node, "kubelet"), says(node, "docker")) == ("kubelet v1.31.2", "docker 25.0.3")
        assert status(node)[0] == 0

        # an OS update waits for a reboot: the 1.32 image, built for the running OS only, does not fit the next
        node.set_update_engine({"mode": "update", "new_version": NEXT, "step_seconds": 0.05})
        node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                 "AttemptUpdate")
        # (the new-OS flow first, with the 1.31 kubelet: its steps that hold the flow lock end before the timer's)
        node.wait_for(lambda: step_done(node, "new-os", "gc"), timeout=90, what="the new-OS flow")
        assert record(node, "new-os", "kubelet-extension")["fits"] == {NEXT: "SYSEXT_LEVEL=1.0 matches",
                                                                       CURRENT: "SYSEXT_LEVEL=1.0 matches"}
        follow(node)
        assert kubelet_tag(node) == "v1.32.0"
        node.wait_for(lambda: run_result(node, "new-kubelet") == "failed", timeout=180, what="the new-kubelet flow")
        error = failure(node, "new-kubelet", "kubelet-image")
        assert f"kubernetes-v1.32.0-x86-64.raw does not fit OS {NEXT}" in error, error
        assert f"VERSION_ID={CURRENT}" in error and f"VERSION_ID={NEXT}" in error
        assert os.readlink(node.host_path(KUBELET_LINK)) == f"{STORE}/kubernetes-v1.31.2-x86-64.raw"  # kept
        code, document = status(node)
        assert document["kubelet"]["verdict"]["current"]["version"] == "v1.31.2"
        assert "kubelet.env selects v1.32.0" in document["kubelet"]["verdict"]["current"]["reason"]


def test_a_kubelet_image_systemd_sysupdate_manages_is_left_to_it_and_the_status_says_so(
        bundle: Path) -> None:
    transfer = "/etc/sysupdate.kubernetes.d/kubernetes.conf"
    bakery = ("[Transfer]\nVerify=false\n[Source]\nType=url-file\nPath=https://bakery.example/\n"
              "MatchPattern=kubernetes-v1.30.@v-%a.raw\n[Target]\nInstancesMax=3\nType=regular-file\n"
              f"Path={STORE}\nCurrentSymlink={KUBELET_LINK}\n")
    with flatcar_node(bundle, {"24.0.9": LEVELLED}, os_version=CURRENT,
                      settings={**SETTINGS, "bootstrap": {"upgrade_os": "no", "reboot": "no"}},
                      kubelet_images={"v1.30.4": LEVELLED}, kube_version="v1.30.4", mappings=MAPPINGS,
                      files={transfer: bakery}) as (cluster, node):
        # what systemd-sysupdate left: its image, its link, its timer enabled
        image = cluster.bucket.root / "sysext/kubernetes-v1.30.4-x86-64.raw"
        node.write(f"{STORE}/kubernetes-v1.30.1-x86-64.raw", image.read_bytes())
        os.symlink(f"{STORE}/kubernetes-v1.30.1-x86-64.raw", node.host_path(KUBELET_LINK))
        enable(node, "systemd-sysupdate.timer", wanted_by="timers.target")
        node.boot()
        result = node.systemctl("start", "torcx-bootstrap.target", check=False, timeout=120)
        assert result.returncode == 0, node.journal(extra=["-u", "torcx-*"])
        assert os.readlink(node.host_path(KUBELET_LINK)) == f"{STORE}/kubernetes-v1.30.1-x86-64.raw"  # untouched
        assert cluster.bucket.requests_for("/sysext/kubernetes-") == []
        assert os.readlink(node.host_path(DOCKER_LINK)) == "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
        assert record(node, "bootstrap", "kubelet-extension")["managed_by"] == transfer
        code, document = status(node)
        decided = f"managed by systemd-sysupdate (transfer {transfer}, systemd-sysupdate.timer enabled)"
        assert document["kubelet"]["managed_by"] == decided, document
        text = node.run("torcx-tectonic", "status", check=False).stdout
        assert f"decided by:     {decided}" in text, text
        assert "torcx-tectonic leaves /etc/extensions/kubernetes.raw alone" in node.journal(
            extra=["-t", "torcx-bootstrap-kubelet-image-version"])
