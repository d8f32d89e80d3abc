"""The kubelet's image with the sysext backend ([sysext] kubernetes = yes):
systemd-sysupdate transfers (pure, then on a tree), the flow table's rows,
the choice under the skew policy and the runtime that follows its minor,
real images stored, checked and linked by the runtime's code, the timer's
step that follows the api-server, and the status and metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from torcx_tectonic import flows
from torcx_tectonic.cluster.view import Cluster
from torcx_tectonic.commands import metrics, status
from torcx_tectonic.commands.cli import document, render_text
from torcx_tectonic.errors import ConfigError, InputError
from torcx_tectonic.state import KubeletImageChoice, KubeletImageInstalled, KubernetesVersion, OsVersions
from torcx_tectonic.steps import cleanup, kubeletimage
from torcx_tectonic.steps.bootstrap import write_kubelet_env
from torcx_tectonic.steps.extension import choose_image, collect_images
from torcx_tectonic.sysext import images as sysext
from torcx_tectonic.sysext import sysupdate

from .helpers import RoutedServer
from .stepenv import StepEnv
from .test_sysext import CURRENT, LEVELLED, NEXT, make_image, needs_images, sysext_env

MAPPINGS = ('kind: VersionManifestV1\nversions:\n  k8s:\n    "1.30":\n      docker: ["24.0.9"]\n'
            '    "1.31":\n      docker: ["25.0.3"]\n')
LINK = "/etc/extensions/kubernetes.raw"
STORE = "/opt/extensions/kubernetes"
BAKERY_TRANSFER = """\
[Transfer]
Verify=false

[Source]
Type=url-file
Path=https://github.com/flatcar/sysext-bakery/releases/latest/download/
MatchPattern=kubernetes-v1.30.@v-%a.raw

[Target]
InstancesMax=3
Type=regular-file
Path=/opt/extensions/kubernetes
CurrentSymlink=/etc/extensions/kubernetes.raw
"""


# --- systemd-sysupdate transfers ---------------------------------------------------------------------

@pytest.mark.parametrize(("text", "manages"), [
    (BAKERY_TRANSFER, True),
    ("[Target]\nCurrentSymlink=/etc/extensions/kubernetes.raw\n", True),
    ("[Target]\nPath=/opt/extensions/kubernetes/\n", True),
    ("[Target]\nPath=/opt/extensions/docker\nCurrentSymlink=/etc/extensions/docker.raw\n", False),
    ("[Source]\nPath=/opt/extensions/kubernetes\n", False),  # where it reads from is not what it writes
    ("[Target]\nPath=relative/kubernetes\n", False),
], ids=["bakery", "symlink", "store", "other-image", "source", "relative"])
def test_which_transfers_manage_the_kubelet_image(text: str, manages: bool) -> None:
    assert sysupdate.manages(text, "t.conf", LINK, "/opt/extensions/kubernetes") is manages


def test_a_transfer_that_cannot_be_read_is_an_error_naming_it() -> None:
    with pytest.raises(InputError, match=r"k\.conf:3: \[Target\] 'Path' is set again .* expected a "
                                         r"systemd-sysupdate transfer \(it might manage /etc/extensions/k"):
        sysupdate.manages("[Target]\nPath=/a\nPath=/b\n", "k.conf", LINK, "/opt/extensions/kubernetes")


def test_the_transfer_is_found_where_the_bakery_puts_it_with_its_timer(env: StepEnv) -> None:
    assert sysupdate.owner(env.paths, "kubernetes") is None
    env.write(env.at("/etc/sysupdate.docker.d/docker.conf"), "[Target]\nCurrentSymlink=/etc/extensions/docker.raw\n")
    env.write(env.at("/etc/sysupdate.kubernetes.d/kubernetes-v1.30.conf"), BAKERY_TRANSFER)
    found = sysupdate.owner(env.paths, "kubernetes")
    assert found == sysupdate.Transfer("/etc/sysupdate.kubernetes.d/kubernetes-v1.30.conf", timer_enabled=False)
    env.at("/etc/systemd/system/timers.target.wants").mkdir(parents=True)
    os.symlink("/usr/lib/systemd/system/systemd-sysupdate.timer",
               env.at("/etc/systemd/system/timers.target.wants/systemd-sysupdate.timer"))
    found = sysupdate.owner(env.paths, "kubernetes")
    assert found is not None and found.timer_enabled
    assert found.refusal("kubernetes", LINK) == (
        "the kubernetes image is managed by systemd-sysupdate (transfer /etc/sysupdate.kubernetes.d/kubernetes-v1.30"
        ".conf, systemd-sysupdate.timer enabled): torcx-tectonic leaves /etc/extensions/kubernetes.raw alone, so "
        "that two agents never move it; to hand the image over, remove /etc/sysupdate.kubernetes.d/kubernetes-v1.30"
        ".conf (and `systemctl disable --now systemd-sysupdate.timer` when no other transfer needs it)")


# --- the flow table ------------------------------------------------------------------------------------

def test_the_kubelet_image_is_two_more_steps_of_the_sysext_row_and_a_timer(env: StepEnv) -> None:
    env.configure({"runtime.backend": "sysext", "sysext.images_url": "https://m/{{.Name}}-{{.Version}}-{{.Arch}}.raw"})
    without = {flow.name: [s.name for s in flow.steps] for flow in flows.all_flows(env.config)}
    assert flows.FOLLOW_API_SERVER not in without
    env.configure({"sysext.kubernetes": "yes"})
    steps = {flow.name: [s.name for s in flow.steps] for flow in flows.all_flows(env.config)}
    assert steps["bootstrap"] == ["os-update", "kubelet-version", "kubelet-image-version", "runtime-version",
                                  "extension", "kubelet-image", "kubelet-env", "finish"]
    assert steps["new-kubelet"][-4:] == ["kubelet-image-version", "runtime-version", "extension", "kubelet-image"]
    assert steps[flows.FOLLOW_API_SERVER] == ["follow"]
    assert flows.path_units(env.config) == ("torcx-new-os.path", "torcx-new-kubelet.path",
                                            "torcx-follow-api-server.timer")
    assert env.context("bootstrap", "finish").step.params == {"installs": "extension", "kubelet": "kubelet-extension"}
    new_kubelet = next(f for f in flows.all_flows(env.config) if f.name == "new-kubelet")
    assert new_kubelet.steps[-1].followed_by == "torcx-new-kubelet-recheck.service"  # after the last install only
    assert new_kubelet.step("extension").followed_by is None  # type: ignore[union-attr]


# --- the steps ---------------------------------------------------------------------------------------------

def kubelet_env(env: StepEnv, bucket: RoutedServer, images: dict[str, bytes]) -> None:
    """A Flatcar node keeping the kubelet's image; the bucket serves ``images``."""
    sysext_env(env, bucket, images)
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.configure({"sysext.kubernetes": "yes"})


def begin(env: StepEnv, flow: str, kube: str, upcoming: str | None = NEXT) -> None:
    env.begin(flow, OsVersions("amd64-usr", CURRENT, upcoming, "update_engine"), KubernetesVersion(kube, "api-server"))


def choose(env: StepEnv, flow: str = "bootstrap") -> KubeletImageChoice:
    choice = kubeletimage.choose_kubelet_image(env.context(flow, "kubelet-image-version"))
    env.state(flow).save(choice)
    return choice


def test_the_kubelet_image_is_the_api_servers_version_and_the_runtime_follows_its_minor(
        env: StepEnv, bucket: RoutedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torcx_tectonic.node.systemd.enable", lambda unit: True)  # the kubelet-env step enables it
    kubelet_env(env, bucket, {"kubernetes-v1.30.2-x86-64.raw": b"k", "kubernetes-v1.31.0-x86-64.raw": b"k",
                              "docker-24.0.9-x86-64.raw": b"d", "docker-25.0.3-x86-64.raw": b"d"})
    begin(env, "bootstrap", "v1.30.4")  # not offered: the newest allowed below it
    found = choose(env)
    assert (found.version, found.current, found.offered) == ("v1.30.2", None, ("v1.30.2", "v1.31.0"))
    assert "v1.30.4 is not offered" in found.reason
    runtime = choose_image(env.context("bootstrap", "runtime-version"))
    assert (runtime.kube_version, runtime.version) == ("v1.30.2", "24.0.9")  # the runtime of 1.30
    env.write(env.installer_env, "KUBELET_IMAGE_URL=x\nKUBELET_IMAGE_TAG=v1.8.0_coreos.0\n")
    write_kubelet_env(env.context("bootstrap", "kubelet-env"))
    assert env.kubelet_env.read_text() == "KUBELET_IMAGE_URL=x\nKUBELET_IMAGE_TAG=v1.30.2\n"  # the torcx-era file

    begin(env, "new-kubelet", "v1.32.0")
    assert choose(env, "new-kubelet").version == "v1.31.0"  # no 1.32 offered: the newest within the skew
    begin(env, "new-kubelet", "v1.35.0")
    with pytest.raises(InputError, match=r"no kubelet image for api-server v1\.35\.0: the skew policy allows 1\.32 "
                                         r"to v1\.35\.0; offered: v1\.30\.2, v1\.31\.0"):
        choose(env, "new-kubelet")
    bucket.routes["/sysext/SHA256SUMS"] = (200, bucket.routes["/sysext/SHA256SUMS"][1] + f"{'0' * 64}  "
                                           "kubernetes-v1.32.0-x86-64.raw\n".encode())
    begin(env, "new-kubelet", "v1.32.0")
    assert choose(env, "new-kubelet").version == "v1.32.0"
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/kubernetes/kubernetes-v1.30.2-x86-64.raw", env.at(LINK))
    begin(env, "new-kubelet", "v1.32.0")
    assert choose(env, "new-kubelet").version == "v1.31.0"  # one minor above the linked kubelet


def test_a_kubelet_env_newer_than_the_api_server_does_not_make_the_kubelet_newer(
        env: StepEnv, bucket: RoutedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    kubelet_env(env, bucket, {"kubernetes-v1.30.4-x86-64.raw": b"k", "kubernetes-v1.31.2-x86-64.raw": b"k"})
    begin(env, "new-kubelet", "v1.31.2")  # kubelet.env, edited by hand
    monkeypatch.setattr(Cluster, "version", lambda self: ("v1.30.4", "api-server https://10.3.0.1:443"))
    assert choose(env, "new-kubelet").version == "v1.30.4"
    monkeypatch.setattr(Cluster, "version", lambda self: ("v1.8.0", "/etc/kubernetes/installer/kubelet.env"))
    assert choose(env, "new-kubelet").version == "v1.31.2"  # the installer's file is no api-server


def test_a_kubelet_image_systemd_sysupdate_manages_is_left_to_it(env: StepEnv, bucket: RoutedServer) -> None:
    kubelet_env(env, bucket, {"kubernetes-v1.30.4-x86-64.raw": b"k"})
    env.write(env.at("/etc/sysupdate.kubernetes.d/kubernetes.conf"), BAKERY_TRANSFER)
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/kubernetes/kubernetes-v1.30.1-x86-64.raw", env.at(LINK))
    begin(env, "bootstrap", "v1.30.4")
    found = choose(env)
    assert (found.version, found.managed_by) == (None, "/etc/sysupdate.kubernetes.d/kubernetes.conf")
    assert bucket.requests == []  # nothing fetched for it
    done = kubeletimage.install_kubelet_image(env.context("bootstrap", "kubelet-image"))
    assert (done.action, done.version, done.runtime_changed) == ("left to systemd-sysupdate", "v1.30.1", False)
    assert os.readlink(env.at(LINK)) == "/opt/extensions/kubernetes/kubernetes-v1.30.1-x86-64.raw"


def test_a_runtime_image_systemd_sysupdate_manages_fails_the_step_naming_the_transfer(
        env: StepEnv, bucket: RoutedServer) -> None:
    kubelet_env(env, bucket, {"docker-24.0.9-x86-64.raw": b"d"})
    env.write(env.at("/etc/sysupdate.d/docker.conf"), "[Target]\nCurrentSymlink=/etc/extensions/docker.raw\n")
    begin(env, "bootstrap", "v1.30.4")
    with pytest.raises(ConfigError, match=r"the docker image is managed by systemd-sysupdate \(transfer "
                                          r"/etc/sysupdate.d/docker.conf, systemd-sysupdate.timer not enabled\)"):
        choose_image(env.context("bootstrap", "runtime-version"))
    assert bucket.requests == []


@needs_images
def test_the_kubelet_image_is_stored_checked_and_linked_like_the_runtimes(env: StepEnv, bucket: RoutedServer,
                                                                         tmp_path: Path) -> None:
    good = make_image(tmp_path, "kubernetes", "v1.30.4", LEVELLED)
    pinned = make_image(tmp_path, "kubernetes", "v1.31.0", f"ID=flatcar\nVERSION_ID={CURRENT}\n")
    kubelet_env(env, bucket, {good.name: good.read_bytes(), pinned.name: pinned.read_bytes()})
    begin(env, "bootstrap", "v1.30.4")
    choose(env)
    done = kubeletimage.install_kubelet_image(env.context("bootstrap", "kubelet-image"))
    assert (done.version, done.action, done.previous, done.runtime_changed) == ("v1.30.4", "downloaded", None, True)
    assert done.change() == "the kubelet changes from none to v1.30.4"
    assert done.fits == {CURRENT: "SYSEXT_LEVEL=1.0 matches", NEXT: "SYSEXT_LEVEL=1.0 matches"}
    assert os.readlink(env.at(LINK)) == f"/opt/extensions/kubernetes/{good.name}"
    assert not os.path.lexists(env.at("/etc/extensions/kubernetes-flatcar.raw"))  # Flatcar ships none to mask
    assert not env.paths.docker_reset_marker.exists()  # only Docker's image empties Docker's data

    begin(env, "new-kubelet", "v1.31.0")
    choose(env, "new-kubelet")
    with pytest.raises(InputError, match=rf"{pinned.name} does not fit OS {NEXT}: .*VERSION_ID={CURRENT}, OS {NEXT}"):
        kubeletimage.install_kubelet_image(env.context("new-kubelet", "kubelet-image"))
    assert os.readlink(env.at(LINK)) == f"/opt/extensions/kubernetes/{good.name}"  # the old link stays


class FakeApi:
    """Stands in for the api-server's client (the real one is TLS-only and has its own tests)."""

    def __init__(self, version: str) -> None:
        self.git_version = version

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def version(self) -> str:
        return self.git_version


def test_the_timer_moves_kubelet_env_one_minor_at_a_time_once_the_last_move_booted(
        env: StepEnv, bucket: RoutedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    kubelet_env(env, bucket, {f"kubernetes-v{v}-x86-64.raw": b"k" for v in ("1.30.4", "1.31.2", "1.32.1")})
    env.write(env.paths.os_release, "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\nFLATCAR_BOARD=amd64-usr\n")
    env.write(env.kubelet_env, "KUBELET_IMAGE_URL=x\nKUBELET_IMAGE_TAG=v1.30.4\n")
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink("/opt/extensions/kubernetes/kubernetes-v1.30.4-x86-64.raw", env.at(LINK))
    env.write(env.root / "usr/lib/extension-release.d/extension-release.kubernetes", LEVELLED)  # merged at boot
    monkeypatch.setattr(kubeletimage, "client", lambda config: FakeApi("v1.32.1"))
    env.begin(flows.FOLLOW_API_SERVER)
    moved = kubeletimage.follow_api_server(env.context(flows.FOLLOW_API_SERVER, "follow"))
    assert (moved.before, moved.after) == ("v1.30.4", "v1.31.2")
    assert env.kubelet_env.read_text() == "KUBELET_IMAGE_URL=x\nKUBELET_IMAGE_TAG=v1.31.2\n"

    # the new-kubelet flow links v1.31.2 for the next boot: the timer waits for that boot
    env.begin("new-kubelet", KubeletImageInstalled(
        runtime="kubernetes", version="v1.31.2", image="/opt/extensions/kubernetes/kubernetes-v1.31.2-x86-64.raw",
        link=LINK, action="downloaded", previous="v1.30.4", runtime_changed=True, activated="at the next boot"))
    os.remove(env.at(LINK))
    os.symlink("/opt/extensions/kubernetes/kubernetes-v1.31.2-x86-64.raw", env.at(LINK))
    env.begin(flows.FOLLOW_API_SERVER)
    waited = kubeletimage.follow_api_server(env.context(flows.FOLLOW_API_SERVER, "follow"))
    assert (waited.before, waited.after) == ("v1.31.2", "v1.31.2")
    assert "runs from the next boot on (v1.30.4 runs now): one minor at a time" in waited.reason

    env.reboot()
    env.begin(flows.FOLLOW_API_SERVER)
    assert kubeletimage.follow_api_server(env.context(flows.FOLLOW_API_SERVER, "follow")).after == "v1.32.1"
    env.begin(flows.FOLLOW_API_SERVER)
    same = kubeletimage.follow_api_server(env.context(flows.FOLLOW_API_SERVER, "follow"))
    assert (same.after, same.reason) == ("v1.32.1", "the api-server's version v1.32.1")


# --- status and metrics ------------------------------------------------------------------------------------

def test_the_status_and_the_metrics_give_the_kubelet_images_verdicts(env: StepEnv, bucket: RoutedServer) -> None:
    kubelet_env(env, bucket, {})
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.30.4\n")
    env.paths.extensions_dir.mkdir(parents=True)
    for name, version in (("docker", "24.0.9"), ("kubernetes", "v1.30.4")):
        image = sysext.image_name(name, version, "x86-64")
        os.symlink(f"/opt/extensions/{name}/{image}", env.paths.extension_link(name))
        env.write(env.paths.cache_dir / f"sysext/{image}.release", LEVELLED if name == "docker" else
                  f"ID=flatcar\nVERSION_ID={CURRENT}\n")
    env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"))
    env.write(env.paths.update_marker, "")
    found = status.gather(env.config, env.paths, units=lambda units: {})
    (kubelet,) = found.view.images
    assert (kubelet.current.ok, kubelet.current.runtime_version) == (True, "v1.30.4")
    assert kubelet.current.reason == ("kubelet v1.30.4 from kubernetes-v1.30.4-x86-64.raw (linked by "
                                      "/etc/extensions/kubernetes.raw), the version kubelet.env selects")
    assert kubelet.next is not None and not kubelet.next.ok
    assert f"OS {NEXT} would not merge kubernetes-v1.30.4-x86-64.raw: " in kubelet.next.reason
    assert "VERSION_ID=3815.2.0" in kubelet.next.reason
    assert kubelet.takes_over is not None and kubelet.takes_over.startswith("kubelet v1.30.4 takes over at the next "
                                                                            "boot")
    assert (found.current.ok, found.next.ok, found.ok) == (True, True, False)  # the runtime's fine, the kubelet's not
    text = render_text(found)
    assert f"  kubernetes image, next OS {NEXT}: NOT OK: OS {NEXT} would not merge" in text
    assert "  decided by:     torcx-tectonic" in text
    doc = document(found)
    assert doc["verdict"]["next"]["ok"] is True  # the runtime's verdict keeps its place
    assert doc["kubelet"]["verdict"]["next"]["ok"] is False and doc["kubelet"]["managed_by"] is None
    families = {f.name: f for f in text_string_to_metric_families(metrics.render(found).decode())}  # type: ignore[no-untyped-call]
    verdicts = families["torcx_tectonic_image_verdict_ok"].samples
    samples = {(s.labels["image"], s.labels["os"]): s.value for s in verdicts}
    assert samples == {("kubernetes", "current"): 1.0, ("kubernetes", "next"): 0.0}

    env.write(env.at("/etc/sysupdate.kubernetes.d/kubernetes.conf"), BAKERY_TRANSFER)
    found = status.gather(env.config, env.paths, units=lambda units: {})
    (kubelet,) = found.view.images
    assert kubelet.ok and kubelet.managed_by == ("managed by systemd-sysupdate (transfer /etc/sysupdate.kubernetes.d/"
                                                 "kubernetes.conf, systemd-sysupdate.timer not enabled)")
    assert "/etc/extensions/kubernetes.raw is managed by systemd-sysupdate" in kubelet.current.reason
    assert "decided by:     managed by systemd-sysupdate (transfer /etc/sysupdate.kubernetes.d/kubernetes.conf" in \
        render_text(found)
    rendered = metrics.render(found).decode()
    info = next(f for f in text_string_to_metric_families(rendered)  # type: ignore[no-untyped-call]
                if f.name == "torcx_tectonic_image_verdict_info")
    assert {s.labels["decided_by"] for s in info.samples} == {"systemd-sysupdate"}


def test_a_kubelet_verdict_without_the_setting_is_not_shown(env: StepEnv, bucket: RoutedServer) -> None:
    sysext_env(env, bucket, {})
    found = status.gather(env.config, env.paths, units=lambda units: {})
    assert found.view.images == () and "kubelet" not in document(found)


def test_gc_and_the_clean_up_after_a_kill_cover_the_kubelet_images_too(env: StepEnv, bucket: RoutedServer) -> None:
    kubelet_env(env, bucket, {})
    env.configure({"sysext.keep": "1"})
    store = env.paths.image_store / "kubernetes"
    for age, version in enumerate(("v1.31.2", "v1.30.4")):
        os.utime(env.write(store / f"kubernetes-{version}-x86-64.raw", version), (1000 - age, 1000 - age))
    env.paths.extensions_dir.mkdir(parents=True)
    os.symlink(f"{STORE}/kubernetes-v1.30.4-x86-64.raw", env.at(LINK))  # the linked one stays, though older
    env.begin("new-os", OsVersions("amd64-usr", CURRENT, NEXT, "update_engine"))
    assert collect_images(env.context("new-os", "gc")).removed == ("kubernetes-v1.31.2-x86-64.raw",)
    assert [p.name for p in store.iterdir()] == ["kubernetes-v1.30.4-x86-64.raw"]
    swept = cleanup.write_directories(env.config, env.paths)
    assert {env.paths.extensions_dir, store} <= set(swept)
