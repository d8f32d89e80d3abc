"""sysext (system extensions) and the sysext backend's steps: which images an
OS merges (pure), checksum lists, atomic links, GC, the extension-release read
from a real squashfs image with systemd-dissect, and the steps on a node
under a temporary root with a local HTTP server for the images."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from torcx_tectonic.errors import ConfigError, InputError, VerificationError
from torcx_tectonic.state import (
    ApiServerUnreachable,
    ExtensionInstalled,
    KubernetesVersion,
    OsVersions,
    RuntimeChoice,
    StateError,
    VerifiedCache,
)
from torcx_tectonic.steps.bootstrap import reboot_reasons
from torcx_tectonic.steps.dockerreset import reset_step
from torcx_tectonic.steps.extension import choose_image, collect_images, install_extension
from torcx_tectonic.strategy import NoRuntimeVersion
from torcx_tectonic.sysext import images as sysext
from torcx_tectonic.sysext.backend import SysextBackend, sysext_verdict
from torcx_tectonic.sysext.switch import changed_from

from .helpers import RoutedServer
from .stepenv import StepEnv

FLATCAR_OS = "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\nFLATCAR_BOARD=amd64-usr\n"
CURRENT, NEXT = "3815.2.0", "3941.1.0"
KUBE = "v1.8.4+coreos.0"
MAPPINGS = 'kind: VersionManifestV1\nversions:\n  k8s:\n    "1.8":\n      docker: ["24.0.9", "20.10.24"]\n'
LEVELLED = "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n"


def release(text: str, origin: str = "image") -> sysext.Release:
    return sysext.release_from_text(text, origin)


HOST = release("ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\n", "os-release")


# --- which images an OS merges ------------------------------------------------------------------------

@pytest.mark.parametrize(("image", "problem"), [
    ("ID=flatcar\nSYSEXT_LEVEL=1.0\n", None),
    ("ID=_any\nSYSEXT_LEVEL=1.0\nARCHITECTURE=_any\n", None),
    ("ID=flatcar\nVERSION_ID=3815.2.0\n", None),
    ("ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n", None),
    ("ID=fedora\nSYSEXT_LEVEL=1.0\n", "image has ID=fedora, os-release ID=flatcar"),
    ("SYSEXT_LEVEL=1.0\n", "image has no ID"),
    ("ID=flatcar\nSYSEXT_LEVEL=2.0\n", "image has SYSEXT_LEVEL=2.0, os-release SYSEXT_LEVEL=1.0"),
    ("ID=flatcar\nVERSION_ID=3760.2.0\n", "image has VERSION_ID=3760.2.0, os-release VERSION_ID=3815.2.0"),
    ("ID=flatcar\n", "image has neither SYSEXT_LEVEL nor VERSION_ID (the host has VERSION_ID=3815.2.0)"),
    ("ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=arm64\n", "image has ARCHITECTURE=arm64, the node is x86-64"),
], ids=["level", "any", "version", "arch", "id", "no-id", "level-differs", "version-differs", "no-version",
        "arch-differs"])
def test_what_systemd_sysext_would_merge(image: str, problem: str | None) -> None:
    assert sysext.misfit(release(image), HOST, "x86-64") == problem


def test_the_next_os_keeps_the_level_and_takes_update_engines_version() -> None:
    following = sysext.next_release(HOST, NEXT)
    assert (following.id, following.version_id, following.sysext_level) == ("flatcar", NEXT, "1.0")
    assert sysext.misfit(release(LEVELLED), following, "x86-64") is None
    pinned = release(f"ID=flatcar\nVERSION_ID={CURRENT}\n", "docker-flatcar.raw")
    assert sysext.misfit(pinned, following, "x86-64") == (
        f"docker-flatcar.raw has VERSION_ID={CURRENT}, OS {NEXT} (its ID and SYSEXT_LEVEL taken from the running "
        f"OS) VERSION_ID={NEXT}")


# --- checksum lists and names ---------------------------------------------------------------------------

SUMS = "\n".join([
    f"{'a' * 64}  docker-24.0.9-x86-64.raw",
    f"{'b' * 64} *docker-20.10.24-x86-64.raw",
    f"{'c' * 64}  docker-24.0.9-arm64.raw",
    f"{'d' * 64}  containerd-1.7.13-x86-64.raw",
    f"{'e' * 64}  docker-..-x86-64.raw",
]) + "\n"


def test_a_checksum_list_offers_the_versions_of_one_runtime_and_arch() -> None:
    sums = sysext.parse_sums(SUMS, "SHA256SUMS")
    assert sums["docker-20.10.24-x86-64.raw"] == "b" * 64
    assert sysext.offered(sums, "docker", "x86-64") == ("24.0.9", "20.10.24")
    assert sysext.offered(sums, "containerd", "x86-64") == ("1.7.13",)
    assert sysext.offered(sums, "docker", "arm64") == ("24.0.9",)


@pytest.mark.parametrize(("text", "message"), [
    ("not a sum line\n", "SHA256SUMS:1: 'not a sum line' is not '<sha256 in hex>  <file name>'"),
    (f"{'a' * 63}  x.raw\n", "is not '<sha256 in hex>  <file name>'"),
    (f"{'a' * 64}  ../x.raw\n", "is not '<sha256 in hex>  <file name>'"),
    (f"{'a' * 64}  x.raw\n{'b' * 64}  x.raw\n", "SHA256SUMS:2: x.raw is listed again with another sum"),
], ids=["words", "short", "path", "twice"])
def test_a_bad_checksum_list_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        sysext.parse_sums(text, "SHA256SUMS")


def test_image_names_are_the_bakerys_and_cannot_escape_the_store() -> None:
    assert sysext.image_name("docker", "24.0.9", "x86-64") == "docker-24.0.9-x86-64.raw"
    assert sysext.version_of("docker-24.0.9-x86-64.raw", "docker", "x86-64") == "24.0.9"
    assert sysext.version_of("docker-flatcar.raw", "docker", "x86-64") is None
    with pytest.raises(InputError, match="docker version '../x' is not allowed"):
        sysext.image_name("docker", "../x", "x86-64")
    assert sysext.fill("https://m/{{.Name}}/{{.Version}}-{{.Arch}}.raw", "docker", "24.0.9", "arm64") == (
        "https://m/docker/24.0.9-arm64.raw")
    with pytest.raises(InputError, match="board 'ppc64-usr' has no known systemd architecture"):
        sysext.arch_of("ppc64-usr")


def test_gc_keeps_the_linked_image_and_the_newest_others() -> None:
    images = ["d-4.raw", "d-3.raw", "d-2.raw", "d-1.raw"]  # newest first
    assert sysext.select_gc(images, ["d-2.raw"], 2) == ["d-3.raw", "d-1.raw"]
    assert sysext.select_gc(images, [], 1) == ["d-3.raw", "d-2.raw", "d-1.raw"]
    assert sysext.select_gc(images, ["d-1.raw"], 5) == []


# --- links -----------------------------------------------------------------------------------------------

def test_a_link_is_replaced_atomically_and_only_when_it_changes(tmp_path: Path) -> None:
    link = tmp_path / "etc/extensions/docker.raw"
    assert sysext.link(link, "/opt/extensions/docker/docker-24.0.9-x86-64.raw") is True
    assert sysext.link(link, "/opt/extensions/docker/docker-24.0.9-x86-64.raw") is False
    assert sysext.link(link, "/opt/extensions/docker/docker-25.0.3-x86-64.raw") is True
    assert os.readlink(link) == "/opt/extensions/docker/docker-25.0.3-x86-64.raw"
    assert sorted(p.name for p in link.parent.iterdir()) == ["docker.raw"]  # no temporary link left
    assert sysext.linked_image(link) == "docker-25.0.3-x86-64.raw"
    sysext.link(link, "/dev/null")
    assert sysext.linked_image(link) is None


def test_a_file_where_the_link_goes_is_not_replaced(tmp_path: Path) -> None:
    link = tmp_path / "docker.raw"
    link.write_text("an image copied here by hand")
    with pytest.raises(InputError, match="exists and is not a link"):
        sysext.link(link, "/opt/extensions/docker/x.raw")
    assert link.read_text() == "an image copied here by hand"


def test_a_stored_image_appears_only_with_the_right_sum(tmp_path: Path) -> None:
    data = b"squashfs bytes" * 100
    with pytest.raises(VerificationError, match="sha256 mismatch for d.raw"):
        sysext.store_image(tmp_path, "d.raw", "0" * 64, [data], "https://m/d.raw")
    assert list(tmp_path.iterdir()) == []
    stored = sysext.store_image(tmp_path, "d.raw", hashlib.sha256(data).hexdigest(), [data[:7], data[7:]], "m")
    assert stored.read_bytes() == data


# --- real images ------------------------------------------------------------------------------------------

needs_images = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("mksquashfs") or not shutil.which("systemd-dissect"),
    reason="building and reading images needs root, mksquashfs and systemd-dissect (make test installs them)")


def make_image(directory: Path, runtime: str, version: str, release_text: str) -> Path:
    """A real system extension image, as the bakery builds one."""
    tree = directory / f"tree-{runtime}-{version}"
    (tree / "usr/lib/extension-release.d").mkdir(parents=True)
    (tree / f"usr/lib/extension-release.d/extension-release.{runtime}").write_text(release_text)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / f"usr/bin/{runtime}").write_text(f"#!/bin/sh\necho {runtime} {version}\n")
    raw = directory / sysext.image_name(runtime, version, "x86-64")
    subprocess.run(["mksquashfs", str(tree), str(raw), "-all-root", "-noappend", "-quiet"], check=True,
                   capture_output=True)
    return raw


@needs_images
def test_the_extension_release_is_read_from_the_image(tmp_path: Path) -> None:
    raw = make_image(tmp_path, "docker", "24.0.9", LEVELLED)
    found = sysext.read_release(raw, "docker")
    assert (found.id, found.sysext_level, found.architecture) == ("flatcar", "1.0", "x86-64")
    with pytest.raises(InputError, match="no /usr/lib/extension-release.d/extension-release.containerd in the image"):
        sysext.read_release(raw, "containerd")
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"not an image" * 100)
    with pytest.raises(InputError, match="junk.raw: no /usr/lib/extension-release.d/extension-release.docker"):
        sysext.read_release(junk, "docker")


# --- the steps ---------------------------------------------------------------------------------------------

def sysext_env(env: StepEnv, bucket: RoutedServer, images: dict[str, bytes]) -> None:
    """The node is Flatcar with the sysext backend; the bucket serves ``images`` and their SHA256SUMS."""
    env.write(env.paths.os_release, FLATCAR_OS)
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.configure({"runtime.backend": "sysext", "sysext.verify_signatures": "no",
                   "sysext.images_url": f"{bucket.base}/sysext/{{{{.Name}}}}-{{{{.Version}}}}-{{{{.Arch}}}}.raw"})
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in images.items())
    bucket.routes["/sysext/SHA256SUMS"] = (200, sums.encode())
    for name, data in images.items():
        bucket.routes[f"/sysext/{name}"] = (200, data)


def chosen(env: StepEnv, flow: str = "new-os", upcoming: str | None = NEXT) -> RuntimeChoice:
    """The runtime step's choice, recorded as the runner records it."""
    state = env.begin(flow, OsVersions("amd64-usr", CURRENT, upcoming, "update_engine"), KubernetesVersion(KUBE, "x"))
    choice = choose_image(env.context(flow, "runtime-version"))
    state.save(choice)
    return choice


def test_the_runtime_version_is_the_first_accepted_one_with_an_image(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {"docker-20.10.24-x86-64.raw": b"old", "docker-25.0.3-x86-64.raw": b"new"})
    choice = chosen(env)
    assert (choice.runtime, choice.version, choice.os_versions) == ("docker", "20.10.24", (NEXT, CURRENT))
    assert choice.preferred == ("24.0.9", "20.10.24")
    assert bucket.requests == ["/sysext/SHA256SUMS"]


def test_the_image_step_does_not_ask_an_api_server_its_run_found_unreachable(
        env: StepEnv, bucket: RoutedServer, caplog: pytest.LogCaptureFixture) -> None:
    """Like the torcx backend's Docker step, it uses the installer's mappings at
    once when an earlier step of its run found no api-server (it paid the
    connection retries again before)."""
    sysext_env(env, bucket, {"docker-20.10.24-x86-64.raw": b"old"})
    server = env.refused_api_server()
    env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"), KubernetesVersion(KUBE, "x"),
              ApiServerUnreachable(server=server, reason="connection refused", step="kubelet-version"))
    caplog.set_level(logging.INFO)
    choice = choose_image(env.context("new-os", "runtime-version"))
    assert choice.version == "20.10.24"
    assert "could not be reached earlier in this run" in caplog.text
    assert "refused" not in caplog.text.replace("(connection refused", "")


def test_a_pin_chooses_its_image_or_fails_naming_the_checksum_list(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {"docker-20.10.24-x86-64.raw": b"old", "docker-24.0.9-x86-64.raw": b"new"})
    env.configure({"runtime.pin": "20.10.24"})
    assert chosen(env).version == "20.10.24"
    env.reboot()
    env.configure({"runtime.pin": "24.0.9"})
    bucket.routes["/sysext/SHA256SUMS"] = (200, f"{hashlib.sha256(b'old').hexdigest()}  docker-20.10.24-x86-64.raw\n"
                                           .encode())
    with pytest.raises(NoRuntimeVersion, match=r"docker is pinned to 24.0.9 .*, which is not offered: "
                                               r".*/sysext/SHA256SUMS for x86-64 offers 20.10.24"):
        chosen(env)


def test_no_accepted_image_fails_naming_both_sides(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {"docker-25.0.3-x86-64.raw": b"new"})
    with pytest.raises(NoRuntimeVersion, match=r"no docker version for Kubernetes v1.8.4\+coreos.0: the mappings "
                       r"from .* accept 24.0.9, 20.10.24, .*/sysext/SHA256SUMS offers 25.0.3 for x86-64"):
        chosen(env)


def test_without_an_images_url_the_step_names_the_key(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {})
    env.configure({"sysext.images_url": ""})
    with pytest.raises(ConfigError, match=r"\[sysext\] images_url is not set"):
        chosen(env)


@needs_images
def test_an_image_that_fits_both_os_versions_is_stored_and_linked(env: StepEnv, bucket: RoutedServer,
                                                                  tmp_path: Path) -> None:
    raw = make_image(tmp_path, "docker", "24.0.9", LEVELLED)
    sysext_env(env, bucket, {raw.name: raw.read_bytes()})
    env.paths.extensions_dir.mkdir(parents=True)  # Flatcar's link to its own image
    os.symlink("/usr/share/flatcar/sysext/docker-flatcar.raw", env.paths.extensions_dir / "docker-flatcar.raw")
    chosen(env)
    done = install_extension(env.context("new-os", "extension"))
    assert (done.version, done.action, done.previous, done.runtime_changed) == ("24.0.9", "downloaded", None, True)
    assert done.fits == {CURRENT: "SYSEXT_LEVEL=1.0 matches", NEXT: "SYSEXT_LEVEL=1.0 matches"}
    assert done.activated == "at the next boot"
    assert os.readlink(env.paths.extensions_dir / "docker.raw") == f"/opt/extensions/docker/{raw.name}"
    assert os.readlink(env.paths.extensions_dir / "docker-flatcar.raw") == "/dev/null"  # masked
    assert (env.paths.image_store / "docker" / raw.name).read_bytes() == raw.read_bytes()
    assert env.paths.docker_reset_marker.is_file()
    again = install_extension(env.context("new-os", "extension"))  # nothing to do the second time,
    assert (again.action, again.runtime_changed, again.previous) == ("present", True, None)  # the change pending
    env.paths.docker_reset_marker.unlink()  # the next boot's reset, before Docker started
    booted = install_extension(env.context("new-os", "extension"))
    assert (booted.action, booted.runtime_changed, booted.previous) == ("present", False, "24.0.9")
    assert bucket.requests.count(f"/sysext/{raw.name}") == 1


@needs_images
def test_a_kill_right_after_the_link_changed_still_leaves_the_docker_reset_marker(
        env: StepEnv, bucket: RoutedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run after the kill finds the new image linked: only a marker written
    before the link says that Docker changes (found by the crash campaign)."""
    raw = make_image(tmp_path, "docker", "24.0.9", LEVELLED)
    sysext_env(env, bucket, {raw.name: raw.read_bytes()})
    chosen(env)
    link = sysext.link

    def killed_after(path: Path, target: str) -> bool:
        link(path, target)
        raise SystemExit("killed")

    monkeypatch.setattr(sysext, "link", killed_after)
    with pytest.raises(SystemExit):
        install_extension(env.context("new-os", "extension"))
    monkeypatch.undo()
    assert os.readlink(env.paths.extensions_dir / "docker.raw") == f"/opt/extensions/docker/{raw.name}"
    again = install_extension(env.context("new-os", "extension"))  # the run after the kill
    assert json.loads(env.paths.docker_reset_marker.read_text()) == {"from": "flatcar", "to": "24.0.9"}
    # the change is still reported (the bootstrap reboots for it), from the marker, not the link
    assert (again.previous, again.runtime_changed) == (None, True)
    assert reboot_reasons(OsVersions("amd64-usr", CURRENT, None, "update_engine"), again) == (
        "docker changes from the OS's own to 24.0.9",)


def test_the_docker_reset_of_a_sysext_node_waits_for_the_image_it_expects_to_be_linked(env: StepEnv) -> None:
    """systemd-sysext merged at boot what the link named: a marker written just
    before a kill that came before the link changed must not empty the data of
    the Docker that still runs (found by the crash campaign)."""
    env.configure({"runtime.backend": "sysext"})
    env.write(env.paths.docker_reset_marker, '{"from": "20.10.24", "to": "24.0.9"}\n')
    env.write(env.paths.docker_data / "containers" / "c1", "old data")
    link = env.paths.extensions_dir / "docker.raw"
    link.parent.mkdir(parents=True)
    link.symlink_to("/opt/extensions/docker/docker-20.10.24-x86-64.raw")
    env.write(env.root / "usr/lib/extension-release.d/extension-release.docker", "ID=flatcar\n")  # merged at boot
    kept = reset_step(env.context("docker-reset", "data"))
    assert (kept.booted, kept.removed) == ("20.10.24", ())
    assert (env.paths.docker_data / "containers" / "c1").is_file() and env.paths.docker_reset_marker.is_file()

    link.unlink()
    link.symlink_to("/opt/extensions/docker/docker-24.0.9-arm64.raw")  # the boot after the link changed
    emptied = reset_step(env.context("docker-reset", "data"))
    assert (emptied.booted, emptied.removed) == ("24.0.9", ("containers",))
    assert list(env.paths.docker_data.iterdir()) == [] and not env.paths.docker_reset_marker.exists()


@needs_images
def test_an_image_pinned_to_the_running_os_is_refused_for_the_next_one(env: StepEnv, bucket: RoutedServer,
                                                                       tmp_path: Path) -> None:
    raw = make_image(tmp_path, "docker", "24.0.9", f"ID=flatcar\nVERSION_ID={CURRENT}\n")
    sysext_env(env, bucket, {raw.name: raw.read_bytes()})
    chosen(env)
    with pytest.raises(InputError) as caught:
        install_extension(env.context("new-os", "extension"))
    message = str(caught.value)
    assert f"docker-24.0.9-x86-64.raw does not fit OS {NEXT}" in message
    assert f"VERSION_ID={CURRENT}" in message and f"VERSION_ID={NEXT}" in message
    assert not (env.paths.extensions_dir / "docker.raw").exists()  # nothing linked


def test_the_install_uses_the_checksum_list_the_runtime_step_verified(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {"docker-24.0.9-x86-64.raw": b"image"})
    chosen(env)
    (env.paths.cache_dir / "sysext/SHA256SUMS").write_text(f"{'0' * 64}  docker-24.0.9-x86-64.raw\n")
    with pytest.raises(StateError, match="changed since it was verified in this run"):
        install_extension(env.context("new-os", "extension"))


def test_gc_keeps_the_linked_image_and_the_configured_number(env: StepEnv, bucket: RoutedServer,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    sysext_env(env, bucket, {})
    env.configure({"sysext.keep": "2"})
    store = env.paths.image_store / "docker"
    for age, version in enumerate(("25.0.3", "24.0.9", "20.10.24", "19.03.15")):
        image = env.write(store / f"docker-{version}-x86-64.raw", version)
        os.utime(image, (1000 - age, 1000 - age))
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/docker/docker-20.10.24-x86-64.raw", env.paths.extensions_dir / "docker.raw")
    env.write(env.paths.cache_dir / "sysext/docker-24.0.9-x86-64.raw.release", LEVELLED)
    env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"))
    synced: list[Path] = []
    for module in ("steps.extension", "state"):  # the removals are durable: each directory is synced after them
        monkeypatch.setattr(f"torcx_tectonic.{module}.fsync_dir", synced.append)
    collected = collect_images(env.context("new-os", "gc"))
    assert collected.removed == ("docker-24.0.9-x86-64.raw", "docker-19.03.15-x86-64.raw")
    assert sorted(p.name for p in store.iterdir()) == ["docker-20.10.24-x86-64.raw", "docker-25.0.3-x86-64.raw"]
    assert not (env.paths.cache_dir / "sysext/docker-24.0.9-x86-64.raw.release").exists()
    assert synced == [env.paths.cache_dir / "sysext", store]


def test_a_gc_killed_between_an_image_and_its_cached_release_removes_both_when_run_again(
        env: StepEnv, bucket: RoutedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the crash campaign: the image went first, and a GC killed
    before its extension-release left that in the cache for good (the next
    GC no longer saw the image)."""
    sysext_env(env, bucket, {})
    env.configure({"sysext.keep": "1"})
    store, cache = env.paths.image_store / "docker", env.paths.cache_dir / "sysext"
    for age, version in enumerate(("24.0.9", "20.10.24")):
        os.utime(env.write(store / f"docker-{version}-x86-64.raw", version), (1000 - age, 1000 - age))
        env.write(cache / f"docker-{version}-x86-64.raw.release", LEVELLED)
    env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"))
    removed: list[str] = []

    def killed(cached: VerifiedCache, name: str) -> None:
        removed.append(name)
        raise SystemExit("killed")

    with monkeypatch.context() as patched:
        patched.setattr(VerifiedCache, "remove", killed)
        with pytest.raises(SystemExit):
            collect_images(env.context("new-os", "gc"))
    assert removed == ["docker-20.10.24-x86-64.raw.release"]
    assert collect_images(env.context("new-os", "gc")).removed == ("docker-20.10.24-x86-64.raw",)
    assert sorted(p.name for p in store.iterdir()) == ["docker-24.0.9-x86-64.raw"]
    assert sorted(p.name for p in cache.iterdir()) == ["docker-24.0.9-x86-64.raw.release"]


def test_the_sysext_record_is_what_the_finish_reads(env: StepEnv) -> None:
    env.configure({"runtime.backend": "sysext"})
    ctx = env.context("bootstrap", "finish")
    assert ctx.step.params == {"installs": ExtensionInstalled.NAME}


# --- the status view of the sysext backend ----------------------------------------------------------------

@pytest.mark.parametrize(("changes", "ok", "reason"), [
    ({}, True, "docker 24.0.9 from docker-24.0.9-x86-64.raw (linked by /etc/extensions/docker.raw)"),
    ({"image": None, "version": None}, False, "links no runtime image: OS 3815.2.0 runs Flatcar's own docker"),
    ({"version": None}, False, "which is not a docker image by name"),
    ({"misfit": "x has VERSION_ID=1, y VERSION_ID=2"}, False, "would not merge docker-24.0.9-x86-64.raw: x has"),
    ({"wanted": ("25.0.3",)}, False, "which Kubernetes v1.8.4+coreos.0 does not accept (it accepts 25.0.3"),
    ({"kube_version": None}, False, "no Kubernetes version is known"),
], ids=["ok", "no-link", "foreign-name", "misfit", "not-accepted", "no-kubernetes"])
def test_the_sysext_verdicts(changes: dict[str, object], ok: bool, reason: str) -> None:
    facts: dict[str, object] = {"os_version": CURRENT, "runtime": "docker", "image": "docker-24.0.9-x86-64.raw",
                                "version": "24.0.9", "link": "/etc/extensions/docker.raw", "misfit": None,
                                "kube_version": KUBE, "wanted": ("24.0.9",), "mapping_source": "m"}
    facts.update(changes)
    found = sysext_verdict(**facts)  # type: ignore[arg-type]
    assert found.ok is ok
    assert reason in found.reason


def test_the_status_of_a_sysext_node_says_what_each_os_merges(env: StepEnv, bucket: RoutedServer) -> None:
    from torcx_tectonic.commands import status

    sysext_env(env, bucket, {})
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    image = env.write(env.paths.image_store / "docker/docker-24.0.9-x86-64.raw", "image")
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/docker/docker-24.0.9-x86-64.raw", env.paths.extensions_dir / "docker.raw")
    env.write(env.paths.cache_dir / "sysext/docker-24.0.9-x86-64.raw.release", f"ID=flatcar\nVERSION_ID={CURRENT}\n")
    state = env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"))
    env.write(env.paths.update_marker, "")
    found = status.gather(env.config, env.paths, units=lambda units: {})
    assert found.backend == "sysext" and found.runtime == "docker"
    assert (found.current.ok, found.current.runtime_version) == (True, "24.0.9")
    assert (found.next.ok, found.next_os) == (False, NEXT)
    assert f"OS {NEXT} would not merge docker-24.0.9-x86-64.raw" in found.next.reason
    assert [(i["version"], i["path"], i["linked"]) for i in found.view.document["images"]["images"]] == [
        ("24.0.9", "/opt/extensions/docker/docker-24.0.9-x86-64.raw", True)]
    assert image.is_file() and state.current().result == "running"
    assert (found.booted, found.view.booted_source) == (
        None, "no docker extension is merged in this boot (Flatcar's own docker, or none)")

    env.write(env.root / "usr/lib/extension-release.d/extension-release.docker", "ID=flatcar\n")  # merged at boot
    found = status.gather(env.config, env.paths, units=lambda units: {})
    assert (found.booted, found.view.booted_source) == (
        "24.0.9", "merged by systemd-sysext in this boot, from the image /etc/extensions/docker.raw linked")


def test_a_sysext_node_runs_the_image_linked_at_boot_until_it_merges_another(env: StepEnv) -> None:
    """A step of this boot that moved the link changed what the next boot
    merges, not what runs: the image linked before it runs, unless the step
    merged the new one at once (activate = refresh)."""
    env.configure({"runtime.backend": "sysext"})
    env.write(env.root / "usr/lib/extension-release.d/extension-release.docker", "ID=flatcar\n")
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/docker/docker-24.0.9-x86-64.raw", env.paths.extensions_dir / "docker.raw")
    moved = ExtensionInstalled(runtime="docker", version="24.0.9",
                               image="/opt/extensions/docker/docker-24.0.9-x86-64.raw",
                               link="/etc/extensions/docker.raw", action="downloaded", previous="20.10.24",
                               runtime_changed=True, activated="at the next boot")
    env.begin("new-kubelet", moved)
    backend = SysextBackend(env.config)
    assert backend.booted(env.paths) == "20.10.24"
    env.begin("new-kubelet", dataclasses.replace(moved, activated="now"))
    assert backend.booted(env.paths) == "24.0.9"


@pytest.mark.parametrize(("linked", "pending", "previous"), [
    ("20.10.24", None, "20.10.24"),
    (None, None, None),
    ("24.0.9", None, "24.0.9"),
    ("24.0.9", ("20.10.24", "24.0.9"), "20.10.24"),
    ("24.0.9", ("flatcar", "24.0.9"), None),
    ("24.0.9", ("20.10.24", "25.0.3"), "24.0.9"),
], ids=["link", "flatcars-own", "same", "not-booted-yet", "not-booted-yet-from-flatcar", "other-change"])
def test_the_version_a_sysext_node_changes_from(linked: str | None, pending: tuple[str | None, str] | None,
                                                previous: str | None) -> None:
    assert changed_from(linked, "24.0.9", pending) == previous
