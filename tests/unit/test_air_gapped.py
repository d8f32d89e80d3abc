"""A node with no route out: no pretend default bucket."""

from __future__ import annotations

import pytest

from torcx_tectonic import runner
from torcx_tectonic.errors import ConfigError
from torcx_tectonic.runtime import choose_runtime
from torcx_tectonic.state import KubernetesVersion, OsVersions

from .stepenv import BOARD, CURRENT_OS, KUBE, MAPPINGS, NEXT_OS, StepEnv

# --- no pretend default -------------------------------------------------------------------------------------


def test_without_a_manifest_url_the_docker_step_names_the_key_at_once(env: StepEnv) -> None:
    env.configure({"torcx.manifest_url": ""})
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.begin("new-os", OsVersions(BOARD, CURRENT_OS, NEXT_OS, "update_engine"), KubernetesVersion(KUBE, "x"))
    ctx = env.context("new-os", "docker-version")
    assert ctx.step.retry
    pauses: list[float] = []
    with pytest.raises(ConfigError) as caught:
        runner.attempt(choose_runtime, ctx, sleep=pauses.append)
    assert pauses == []  # not tried again: only the operator can fix it
    assert str(caught.value).startswith("[torcx] manifest_url is not set")
    assert "e.g. manifest_url = https://bucket.example/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json" in \
        str(caught.value)
    assert not env.paths.cache_dir.exists()


def test_an_os_without_remote_addons_needs_no_manifest_url(env: StepEnv) -> None:
    env.configure({"torcx.manifest_url": ""})
    env.begin("new-os", OsVersions(BOARD, "1465.8.0", None, "update_engine"), KubernetesVersion(KUBE, "x"))
    assert choose_runtime(env.context("new-os", "docker-version")).version is None
