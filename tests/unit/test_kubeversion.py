"""Steps kubelet-version and recheck: the Kubernetes version a flow works for."""

from __future__ import annotations

import socket

import pytest

from torcx_tectonic.errors import ConfigError, InputError
from torcx_tectonic.state import ApiServerUnreachable, KubeletRechecked, KubernetesVersion, StateError
from torcx_tectonic.steps.kubeversion import kubernetes_version, recheck

from .stepenv import MAPPINGS, StepEnv

ANCHOR = "torcx-new-kubelet-addons.service"


def _version(env: StepEnv, flow: str, step: str = "kubelet-version") -> KubernetesVersion:
    ctx = env.context(flow, step)
    return kubernetes_version(ctx, **ctx.step.params)  # type: ignore[arg-type]


def test_a_forced_version_wins(env: StepEnv) -> None:
    env.configure({"kubernetes.force_version": "v1.8.4+coreos.0"})
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    for flow in ("bootstrap", "new-kubelet"):
        assert _version(env, flow) == KubernetesVersion("v1.8.4+coreos.0", "[kubernetes] force_version")


def test_a_forced_version_must_be_a_version(env: StepEnv) -> None:
    # refused where the configuration is read, naming the key
    with pytest.raises(ConfigError, match=r"\[kubernetes\] force_version = 'latest': expected a Kubernetes version"):
        env.configure({"kubernetes.force_version": "latest"})
        _version(env, "bootstrap")


@pytest.mark.parametrize("flow", ["new-os", "new-kubelet"])
def test_the_follow_up_flows_read_kubelet_env(env: StepEnv, flow: str) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\nKUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    env.write(env.installer_env, "KUBELET_IMAGE_TAG=v1.8.0_coreos.0\n")
    assert _version(env, flow) == KubernetesVersion("v1.9.1+coreos.0", str(env.kubelet_env))


def test_kubelet_env_without_a_tag_fails(env: StepEnv) -> None:
    env.write(env.kubelet_env, "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n")
    with pytest.raises(InputError, match="KUBELET_IMAGE_TAG is missing or empty"):
        _version(env, "new-kubelet")


def test_bootstrap_without_kubeconfig_uses_the_installer_file(env: StepEnv) -> None:
    env.write(env.installer_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    assert not env.config.kubernetes.kubeconfig.exists()
    assert _version(env, "bootstrap") == KubernetesVersion("v1.8.4+coreos.0", str(env.installer_env))


def test_bootstrap_with_an_unreachable_api_server_uses_the_installer_file(env: StepEnv,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    server = env.refused_api_server()
    env.write(env.installer_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    assert _version(env, "bootstrap") == KubernetesVersion("v1.8.4+coreos.0", str(env.installer_env))
    assert f"cannot reach {server}/version" in caplog.text


def test_bootstrap_with_a_broken_kubeconfig_fails(env: StepEnv) -> None:
    env.write(env.config.kubernetes.kubeconfig, "apiVersion: v1\nkind: Config\nclusters: 3\n")
    env.write(env.installer_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    with pytest.raises(InputError, match="kubeconfig"):
        _version(env, "bootstrap")


def test_a_kubelet_env_that_is_not_utf8_is_an_input_error(env: StepEnv) -> None:
    env.kubelet_env.parent.mkdir(parents=True)
    env.kubelet_env.write_bytes(b"KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n# \xff\xfe\n")
    with pytest.raises(InputError, match="kubelet.env"):
        _version(env, "new-kubelet")


# --- recheck -------------------------------------------------------------------------------------------

def _recheck(env: StepEnv) -> KubeletRechecked:
    ctx = env.context("new-kubelet", "recheck")
    assert ctx.step.params == {"anchor": ANCHOR}
    return recheck(ctx, anchor=ANCHOR)


@pytest.mark.parametrize(("now", "rerun"), [("v1.9.1_coreos.0", False), ("v1.10.0_coreos.0", True)])
def test_recheck_runs_the_flow_again_only_when_kubelet_env_moved_on(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                                    now: str, rerun: bool) -> None:
    started: list[str] = []
    monkeypatch.setattr("torcx_tectonic.node.systemd.start", started.append)
    env.begin("new-kubelet", KubernetesVersion("v1.9.1+coreos.0", str(env.kubelet_env)))
    env.write(env.kubelet_env, f"KUBELET_IMAGE_TAG={now}\n")
    record = _recheck(env)
    assert record == KubeletRechecked(used="v1.9.1+coreos.0", now=now.replace("_", "+"), rerun=rerun)
    assert started == ([ANCHOR] if rerun else [])


def test_recheck_with_a_forced_version_never_reruns(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr("torcx_tectonic.node.systemd.start", started.append)
    env.configure({"kubernetes.force_version": "v1.9.1+coreos.0"})
    env.begin("new-kubelet", KubernetesVersion("v1.9.1+coreos.0", "[kubernetes] force_version"))
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.10.0_coreos.0\n")
    assert _recheck(env).rerun is False
    assert started == []


def test_recheck_needs_the_version_the_run_used(env: StepEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    monkeypatch.setattr("torcx_tectonic.node.systemd.start", started.append)
    env.write(env.kubelet_env, "KUBELET_IMAGE_TAG=v1.10.0_coreos.0\n")
    env.begin("new-kubelet")
    with pytest.raises(StateError, match="no kubernetes-version recorded in this run"):
        _recheck(env)
    assert started == []


def test_an_api_server_refused_in_a_run_is_not_asked_again_in_that_run(env: StepEnv,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    server = env.refused_api_server()
    port = int(server.rsplit(":", 1)[1])
    env.write(env.installer_env, "KUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.begin("bootstrap")
    assert _version(env, "bootstrap") == KubernetesVersion("v1.8.4+coreos.0", str(env.installer_env))
    fact = env.state("bootstrap").fact(ApiServerUnreachable)
    assert fact is not None and (fact.server, fact.step) == (f"https://127.0.0.1:{port}", "kubelet-version")
    assert fact.reason.endswith("connection refused")

    # A later step of the same run: something listens there now, and is not asked.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        listener.setblocking(False)
        ctx = env.context("bootstrap", "docker-version")
        mappings = ctx.cluster().runtime_mappings()
        assert mappings.source == str(env.config.kubernetes.runtime_mappings)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert "could not be reached earlier in this run" in caplog.text

    # The next run asks again.
    env.begin("bootstrap")
    assert env.state("bootstrap").fact(ApiServerUnreachable) is None
