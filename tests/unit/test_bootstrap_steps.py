"""Bootstrap steps 5 and 6: write kubelet.env, then enable the kubelet and
decide whether the node reboots. PID 1 (enable/start over D-Bus) is the
stand-in."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from torcx_tectonic import flows
from torcx_tectonic.errors import InputError
from torcx_tectonic.state import (
    AddonsInstalled,
    BootstrapFinished,
    KubeletEnvWritten,
    KubernetesVersion,
    OsVersions,
    StateError,
)
from torcx_tectonic.steps.bootstrap import finish, reboot_reasons, write_kubelet_env

from .stepenv import BOARD, CURRENT_OS, INSTALLER_ENV, KUBE, NEXT_OS, StepEnv


class Systemd:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.enabled: list[str] = []
        self.started: list[str] = []
        self.on_enable: Callable[[], None] | None = None
        monkeypatch.setattr("torcx_tectonic.node.systemd.enable", self.enable)
        monkeypatch.setattr("torcx_tectonic.node.systemd.start", self.started.append)

    def enable(self, unit: str) -> bool:
        self.enabled.append(unit)
        if self.on_enable is not None:
            self.on_enable()
        return True


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Systemd:
    return Systemd(monkeypatch)


# --- kubelet.env ---------------------------------------------------------------------------------------

def _kubelet_env_step(env: StepEnv) -> KubeletEnvWritten:
    return write_kubelet_env(env.context("bootstrap", "kubelet-env"))


def test_kubelet_env_is_written_from_the_installer_copy_once(env: StepEnv, systemd: Systemd) -> None:
    env.write(env.installer_env, INSTALLER_ENV)
    env.begin("bootstrap", KubernetesVersion(KUBE, "api-server"))
    # the kubelet is enabled first: kubelet.env ends bootstrapping, at this boot and every later one
    def enabled_first() -> None:
        assert not env.kubelet_env.exists(), "kubelet.env was written first"

    systemd.on_enable = enabled_first
    assert _kubelet_env_step(env) == KubeletEnvWritten(path=str(env.kubelet_env), written=True, kube_version=KUBE)
    assert systemd.enabled == ["kubelet.service"]
    assert env.kubelet_env.read_text() == ("# from the installer\nKUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n"
                                           "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    inode, mtime = env.kubelet_env.stat().st_ino, env.kubelet_env.stat().st_mtime_ns
    assert _kubelet_env_step(env).written is False
    assert (env.kubelet_env.stat().st_ino, env.kubelet_env.stat().st_mtime_ns) == (inode, mtime)
    assert systemd.enabled == ["kubelet.service"]  # not again


@pytest.mark.parametrize(("template", "expected"), [
    (None, "installer/kubelet.env: missing; expected a kubelet environment file with KUBELET_IMAGE_TAG"),
    ("KUBELET_IMAGE_TAG=v1\nbroken line\n", "installer/kubelet.env:2: expected KEY=value"),
], ids=["missing", "malformed"])
def test_a_bad_installer_kubelet_env_writes_nothing(env: StepEnv, systemd: Systemd, template: str | None,
                                                    expected: str) -> None:
    if template is not None:
        env.write(env.installer_env, template)
    env.begin("bootstrap", KubernetesVersion(KUBE, "api-server"))
    with pytest.raises(InputError, match=expected):
        _kubelet_env_step(env)
    assert not env.kubelet_env.exists() and systemd.enabled == []


def test_kubelet_env_needs_the_kubernetes_version(env: StepEnv, systemd: Systemd) -> None:
    env.write(env.installer_env, INSTALLER_ENV)
    env.begin("bootstrap")
    with pytest.raises(StateError, match="no kubernetes-version recorded"):
        _kubelet_env_step(env)
    assert not env.kubelet_env.exists()


# --- finish --------------------------------------------------------------------------------------------

def _until_finish(env: StepEnv, next_os: str | None = None, previous: str = "17.03",
                  addons: bool = True) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    records = [OsVersions(BOARD, CURRENT_OS, next_os, "update_engine"), KubernetesVersion(KUBE, "x"),
               KubeletEnvWritten(str(env.kubelet_env), True, KUBE)]
    if addons:
        records.append(AddonsInstalled("docker", "17.03", previous=previous, runtime_changed=previous != "17.03"))
    env.begin("bootstrap", *records)


def _finish(env: StepEnv) -> BootstrapFinished:
    ctx = env.context("bootstrap", "finish")
    return finish(ctx, **ctx.step.params)  # type: ignore[arg-type]


def test_finish_without_a_reason_enables_and_starts_the_kubelet_and_the_path_units(env: StepEnv,
                                                                                   systemd: Systemd) -> None:
    _until_finish(env)
    record = _finish(env)
    assert record == BootstrapFinished(kubelet_enabled=True, reboot=False, reboot_reasons=())
    assert record.reboot_reason() is None
    assert systemd.enabled == ["kubelet.service"]
    path_units = list(flows.path_units(env.config))
    assert path_units == ["torcx-new-os.path", "torcx-new-kubelet.path"]
    assert systemd.started == ["kubelet.service", *path_units]


@pytest.mark.parametrize(("next_os", "previous", "reasons"), [
    (NEXT_OS, "17.03", (f"OS {NEXT_OS} is installed",)),
    (None, "com.coreos.cl", ("docker changes from com.coreos.cl to 17.03",)),
    (NEXT_OS, "1.12", (f"OS {NEXT_OS} is installed", "docker changes from 1.12 to 17.03")),
], ids=["os", "docker", "both"])
def test_finish_reboots_when_the_os_or_docker_changed(env: StepEnv, systemd: Systemd, next_os: str | None,
                                                      previous: str, reasons: tuple[str, ...]) -> None:
    _until_finish(env, next_os, previous)
    record = _finish(env)
    assert record == BootstrapFinished(kubelet_enabled=True, reboot=True, reboot_reasons=reasons)
    assert record.reboot_reason() == ", ".join(reasons)
    assert systemd.enabled == ["kubelet.service"]
    assert systemd.started == []  # the kubelet starts after the reboot, with the right Docker


def test_with_reboot_off_finish_starts_the_kubelet_anyway(env: StepEnv, systemd: Systemd,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    env.configure({"bootstrap.reboot": "no"})
    _until_finish(env, NEXT_OS)
    record = _finish(env)
    assert (record.reboot, record.reboot_reasons, record.reboot_reason()) == (
        False, (f"OS {NEXT_OS} is installed",), None)
    assert systemd.started == ["kubelet.service", "torcx-new-os.path", "torcx-new-kubelet.path"]
    assert f"a reboot is needed (OS {NEXT_OS} is installed) but [bootstrap] reboot=no" in caplog.text


def test_with_skip_torcx_finish_needs_no_addons_record(env: StepEnv, systemd: Systemd) -> None:
    env.configure({"bootstrap.skip_torcx": "yes"})
    _until_finish(env, NEXT_OS, addons=False)
    assert _finish(env).reboot_reasons == (f"OS {NEXT_OS} is installed",)


def test_finish_needs_the_addons_record(env: StepEnv, systemd: Systemd) -> None:
    _until_finish(env, addons=False)
    with pytest.raises(StateError, match="no addons recorded in this run"):
        _finish(env)
    assert (systemd.enabled, systemd.started) == ([], [])


def test_finish_needs_kubelet_env(env: StepEnv, systemd: Systemd) -> None:
    env.begin("bootstrap", OsVersions(BOARD, CURRENT_OS, None, "x"))
    with pytest.raises(InputError, match="kubelet.env: missing; the kubelet-env step writes it"):
        _finish(env)
    assert (systemd.enabled, systemd.started) == ([], [])


def test_finish_after_a_kill_that_left_kubelet_env_without_its_record(env: StepEnv, systemd: Systemd) -> None:
    # the kubelet-env step was killed after the rename, before its record: started again, the
    # bootstrap skips it (kubelet.env exists) and its last step finishes the node
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    env.begin("bootstrap", OsVersions(BOARD, CURRENT_OS, None, "x"), KubernetesVersion(KUBE, "x"),
              AddonsInstalled("docker", "17.03", previous="17.03"))
    assert _finish(env) == BootstrapFinished(kubelet_enabled=True, reboot=False, reboot_reasons=())
    assert systemd.started[0] == "kubelet.service"


def test_finish_of_a_run_that_already_ended_does_nothing(env: StepEnv, systemd: Systemd) -> None:
    _until_finish(env, NEXT_OS)
    env.state("bootstrap").step_succeeded("finish", ends_run=True)
    record = _finish(env)
    assert record == BootstrapFinished(kubelet_enabled=False, reboot=False, already_finished=True)
    assert record.reboot_reason() is None
    assert (systemd.enabled, systemd.started) == ([], [])


def test_reboot_reasons_of_nothing() -> None:
    assert reboot_reasons(OsVersions(BOARD, CURRENT_OS, None, "x"), None) == ()
    assert reboot_reasons(OsVersions(BOARD, CURRENT_OS, None, "x"),
                          AddonsInstalled("docker", None, runtime_changed=False)) == ()
