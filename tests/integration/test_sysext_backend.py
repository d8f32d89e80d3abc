"""The sysext backend on a Flatcar-like node: the runtime is a system extension image.

The node's os-release is Flatcar's (``ID=flatcar``, ``SYSEXT_LEVEL=1.0``), it
runs Flatcar's ``systemd-sysext.service`` and the ``ensure-sysext`` stand-in,
and it has loop devices, so its own ``systemd-sysext`` merges the ``.raw``
images the product links. The stand-in bucket serves real squashfs images
(``mksquashfs``), named as the sysext-bakery names them, with a signed
``SHA256SUMS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from simnode.cluster import ANNOTATION, CLUO_PREFIX, SYSEXT_MAPPINGS, enable, flatcar_node
from simnode.flatcar import LEVELLED
from simnode.node import REBOOT_EXIT_CODE, Node

from .flows import failure, last_run, record, run_result, status, step_done

CURRENT, NEXT = "3815.2.0", "3941.1.0"  # Flatcar releases without torcx: the runtime is a system extension
UPDATE = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
LINK = "/etc/extensions/docker.raw"

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs mksquashfs (make test installs it)")


def docker_says(node: Node) -> str:
    """What the merged image's /usr/bin/docker prints (the host's /usr/local is visible in the node)."""
    result = node.run("/usr/bin/docker", check=False)
    return result.stdout.strip() if result.returncode == 0 else f"(no docker: {result.stderr.strip()})"


def test_a_flatcar_node_bootstraps_follows_kubernetes_and_the_next_os_with_system_extensions(bundle: Path) -> None:
    images = {"24.0.9": LEVELLED, "25.0.3": LEVELLED}
    with flatcar_node(bundle, images, os_version=CURRENT, update_engine=UPDATE) as (cluster, node):
        enable(node, "torcx-bootstrap.target")
        node.boot(wait_ready=False)  # the first boot bootstraps and reboots into the update
        assert node.wait_exit(180) == REBOOT_EXIT_CODE
        image = "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
        assert os.readlink(node.host_path(LINK)) == image
        assert os.readlink(node.host_path("/etc/extensions/docker-flatcar.raw")) == "/dev/null"  # masked
        run = last_run(node, "bootstrap")
        assert run["result"] == "rebooting"
        assert run["note"] == f"rebooting for: OS {NEXT} is installed, docker changes from the OS's own to 24.0.9"
        assert len([r for r in cluster.bucket.requests_for("/sysext/docker-")]) == 1

        # the next boot, on the new OS: its own systemd-sysext merges the linked image
        node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
        node.wait_for(lambda: "docker" in node.run("systemd-sysext", "status", check=False).stdout, timeout=60,
                      what="systemd-sysext to merge the image")
        assert docker_says(node) == "docker 24.0.9"
        code, document = status(node)
        assert (code, document["runtime"]["backend"], document["verdict"]["current"]["runtime_version"]) == (
            0, "sysext", "24.0.9"), document

        # Kubernetes 1.9: the image it prefers is fetched and linked, merged at the next boot
        node.write("/etc/kubernetes/kubelet.env",
                   "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
        node.wait_for(lambda: run_result(node, "new-kubelet") == "ok", timeout=90, what="the new-kubelet flow")
        assert os.readlink(node.host_path(LINK)) == "/opt/extensions/docker/docker-25.0.3-x86-64.raw"
        assert record(node, "new-kubelet", "extension")["activated"] == "at the next boot"
        assert docker_says(node) == "docker 24.0.9"  # merged at the next boot

        # the next OS update: the image is checked against it, kept images collected, the node annotated
        cluster.api.update_node_metadata("node-1", set_labels={f"{CLUO_PREFIX}/before-reboot": "true"},
                                         source="operator")
        node.set_update_engine({"mode": "update", "new_version": "3975.2.0", "step_seconds": 0.05})
        node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                 "AttemptUpdate")
        node.wait_for(lambda: step_done(node, "new-os", "annotate"), timeout=90, what="the new-OS flow")
        fits = record(node, "new-os", "extension")["fits"]
        assert fits == {"3975.2.0": "SYSEXT_LEVEL=1.0 matches", NEXT: "SYSEXT_LEVEL=1.0 matches"}
        assert cluster.api.annotations()[ANNOTATION] == "true"
        node.shutdown()
        node.boot_again(os_version="3975.2.0", update_engine={"mode": "none"})
        node.wait_for(lambda: "docker" in node.run("systemd-sysext", "status", check=False).stdout, timeout=60,
                      what="systemd-sysext to merge the image")
        assert docker_says(node) == "docker 25.0.3"
        assert status(node)[0] == 0


def test_an_image_the_next_os_would_not_merge_is_refused_and_named(bundle: Path) -> None:
    pinned = f"ID=flatcar\nVERSION_ID={CURRENT}\n"  # an image built for one OS release only
    with flatcar_node(bundle, {"24.0.9": pinned}, os_version=CURRENT, update_engine=UPDATE,
                      settings={"bootstrap": {"reboot": "no"}}) as (_, node):
        node.boot()
        result = node.systemctl("start", "torcx-bootstrap.target", check=False, timeout=120)
        assert result.returncode != 0
        error = failure(node, "bootstrap", "extension")
        assert f"docker-24.0.9-x86-64.raw does not fit OS {NEXT}" in error
        assert f"VERSION_ID={CURRENT}" in error and f"VERSION_ID={NEXT}" in error
        assert not os.path.lexists(node.host_path(LINK))  # nothing linked: the node keeps what it had
        assert not node.exists("/etc/kubernetes/kubelet.env")


def test_a_flatcar_node_with_only_a_mirror_of_the_images_bootstraps(bundle: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`torcx-tectonic mirror` copies the signed SHA256SUMS and the images the
    Kubernetes minors need from the stand-in bucket; the bucket is stopped and
    the node, with the mirror under /srv, bootstraps from it alone."""
    from simnode.cluster import mappings_yaml
    from torcx_tectonic.commands import cli as command

    with flatcar_node(bundle, {"24.0.9": LEVELLED, "25.0.3": LEVELLED}, os_version=CURRENT,
                      settings={"bootstrap": {"reboot": "no", "upgrade_os": "no"}}) as (cluster, node):
        work = Path(tempfile.mkdtemp(prefix="tt-sysext-mirror-"))
        try:
            (work / "keyring.gpg").write_bytes(cluster.signer.export_public())
            (work / "ca.pem").write_bytes(cluster.pki.ca_cert_pem)
            (work / "mappings.yaml").write_text(mappings_yaml(SYSEXT_MAPPINGS))
            template = f"{cluster.bucket.base_url}/sysext/{{{{.Name}}}}-{{{{.Version}}}}-{{{{.Arch}}}}.raw"
            (work / "mirror.conf").write_text(
                f"[runtime]\nbackend = sysext\n[sysext]\nimages_url = {template}\nkeyring = {work / 'keyring.gpg'}\n"
                f"[network]\nca_bundle = {work / 'ca.pem'}\nretries = 1\nbackoff_factor = 0.1\n")
            capsys.readouterr()
            code = command.main(["mirror", "--config", str(work / "mirror.conf"), "--to", str(work / "mirror"),
                                 "--kubernetes", "1.8", "--mappings", str(work / "mappings.yaml"),
                                 "--served-at", "file:///srv/mirror"])
            out, err = capsys.readouterr()
            assert (code, err) == (0, ""), out + err
            assert "images_url = file:///srv/mirror/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw" in out
            cluster.bucket.close()  # no route out
            for path in sorted((work / "mirror").rglob("*")):
                if path.is_file():
                    node.write(f"/srv/mirror/{path.relative_to(work / 'mirror')}", path.read_bytes())
            node.write("/etc/torcx-tectonic/conf.d/60-mirror.conf",
                       "[sysext]\nimages_url = file:///srv/mirror/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        node.boot()
        result = node.systemctl("start", "torcx-bootstrap.target", check=False, timeout=120)
        assert result.returncode == 0, node.journal(extra=["-u", "torcx-*"])
        assert os.readlink(node.host_path(LINK)) == "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
        assert last_run(node, "bootstrap")["result"] == "ok"
        assert record(node, "bootstrap", "extension")["action"] == "downloaded"
