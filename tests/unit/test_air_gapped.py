"""A node with no route out: manifests from a file:// mirror, addons from the
addon mirror (``[torcx] addon_mirror``), and no pretend default bucket.

The steps run as in test_addons.py (a node under a temporary root, contexts
from the real flow table); the mirror is a directory laid out as
``torcx-tectonic mirror`` writes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from torcx_tectonic import config
from torcx_tectonic.edges.source import mirrored_addon_url
from torcx_tectonic.errors import ConfigError, LocalFileMissing, NetworkError, VerificationError
from torcx_tectonic.state import AddonPlacement, KubernetesVersion, ManifestCache, OsVersions, Record, RuntimeChoice
from torcx_tectonic.steps import runner
from torcx_tectonic.steps.addons import install_addons
from torcx_tectonic.steps.context import Context
from torcx_tectonic.steps.runtime import choose_runtime

from .helpers import Keys, RoutedServer
from .stepenv import ADDON, ADDON_NAME, BOARD, CURRENT_OS, KUBE, MAPPINGS, NEXT_OS, StepEnv, addon_manifest

#: What the manifests say: the bucket they came from, which the node cannot reach.
UPSTREAM = {"url": "https://bucket.invalid/addons/docker:17.03.torcx.tgz"}


def _mirror(env: StepEnv, keys: Keys, os_versions: tuple[str, ...] = (NEXT_OS, CURRENT_OS),
            addon: bytes = ADDON) -> Path:
    """A mirror under the node's /srv/mirror with the signed manifests and
    addons of ``os_versions``; the node's configuration points at it."""
    root = env.at("/srv/mirror")
    for os_version in os_versions:
        manifest = root / "manifests" / BOARD / os_version / "torcx_manifest.json"
        manifest.parent.mkdir(parents=True)
        raw = addon_manifest(UPSTREAM)
        manifest.write_bytes(raw)
        Path(f"{manifest}.asc").write_bytes(keys.sign(raw))
        (root / "addons" / BOARD / os_version).mkdir(parents=True)
        (root / "addons" / BOARD / os_version / ADDON_NAME).write_bytes(addon)
    env.configure({"torcx.manifest_url": f"file://{root}/manifests/{{{{.Board}}}}/{{{{.OSVersion}}}}/"
                                         "torcx_manifest.json",
                   "torcx.addon_mirror": f"file://{root}/addons",
                   "torcx.verify_signatures": "yes", "torcx.keyring": str(keys.keyring)})
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    return root


def _runtime(env: StepEnv) -> RuntimeChoice:
    env.begin("new-os", OsVersions(BOARD, CURRENT_OS, NEXT_OS, "update_engine"), KubernetesVersion(KUBE, "x"))
    choice = choose_runtime(env.context("new-os", "docker-version"))
    env.state("new-os").save(choice)
    return choice


def _store(env: StepEnv, os_version: str) -> Path:
    return env.paths.user_store / os_version / ADDON_NAME


def test_a_node_with_only_a_file_mirror_gets_its_addons(env: StepEnv, keys: Keys) -> None:
    root = _mirror(env, keys, addon=ADDON)
    choice = _runtime(env)
    assert (choice.version, choice.os_versions) == ("17.03", (NEXT_OS, CURRENT_OS))
    record = install_addons(env.context("new-os", "addons"))
    next_url = f"file://{root}/addons/{BOARD}/{NEXT_OS}/{ADDON_NAME}"
    assert record.placements == (
        AddonPlacement(NEXT_OS, "downloaded", str(_store(env, NEXT_OS)), next_url, len(ADDON)),
        AddonPlacement(CURRENT_OS, "linked", str(_store(env, CURRENT_OS))))
    assert _store(env, NEXT_OS).read_bytes() == ADDON == _store(env, CURRENT_OS).read_bytes()
    # the manifest cached is the signed one, byte for byte: nothing rewrote it
    cached = ManifestCache(env.paths.cache_dir).get(BOARD, NEXT_OS, choice.manifests[NEXT_OS])
    assert cached == (root / "manifests" / BOARD / NEXT_OS / "torcx_manifest.json").read_bytes()


def test_an_addon_the_mirror_lacks_is_an_error_naming_its_path(env: StepEnv, keys: Keys) -> None:
    root = _mirror(env, keys)
    _runtime(env)
    missing = root / "addons" / BOARD / NEXT_OS / ADDON_NAME
    missing.unlink()
    with pytest.raises(NetworkError) as caught:
        install_addons(env.context("new-os", "addons"))
    assert str(caught.value).startswith(f"{ADDON_NAME} for OS {NEXT_OS}: {missing} does not exist (file://{missing})")
    assert not env.paths.user_store.exists() or not any(env.paths.user_store.rglob("*.tgz"))


def test_a_file_the_mirror_lacks_fails_the_step_at_once_without_retrying(env: StepEnv, keys: Keys) -> None:
    root = _mirror(env, keys)
    _runtime(env)
    missing = root / "addons" / BOARD / NEXT_OS / ADDON_NAME
    missing.unlink()
    ctx = env.context("new-os", "addons")
    assert ctx.step.retry and config.retry_delays(ctx.config.units)  # a failure from the bucket would be retried
    attempts: list[Context] = []

    def counted(ctx: Context) -> Record:
        attempts.append(ctx)
        return install_addons(ctx)

    pauses: list[float] = []
    with pytest.raises(LocalFileMissing, match=f"{missing} does not exist"):
        runner.attempt(counted, ctx, sleep=pauses.append)
    assert len(attempts) == 1 and pauses == []


def test_a_changed_addon_in_the_mirror_never_enters_a_store(env: StepEnv, keys: Keys) -> None:
    root = _mirror(env, keys)
    _runtime(env)
    (root / "addons" / BOARD / NEXT_OS / ADDON_NAME).write_bytes(b"another docker")
    with pytest.raises(VerificationError) as caught:
        install_addons(env.context("new-os", "addons"))
    assert f"file://{root}/addons/{BOARD}/{NEXT_OS}/{ADDON_NAME}: sha512 mismatch" in str(caught.value)
    assert "nothing was stored" in str(caught.value)
    assert not any(env.paths.user_store.rglob("*.tgz"))
    assert not env.paths.next_profile.exists()


def test_a_manifest_without_its_signature_in_the_mirror_is_refused(env: StepEnv, keys: Keys) -> None:
    root = _mirror(env, keys)
    Path(f"{root}/manifests/{BOARD}/{NEXT_OS}/torcx_manifest.json.asc").unlink()
    with pytest.raises(VerificationError, match=f"file://{root}/manifests/{BOARD}/{NEXT_OS}/torcx_manifest.json.asc "
                                                "does not exist; expected a detached OpenPGP signature"):
        _runtime(env)
    assert not ManifestCache(env.paths.cache_dir).path(BOARD, NEXT_OS).exists()


def test_an_https_addon_mirror_is_asked_at_its_deterministic_path(env: StepEnv, keys: Keys,
                                                                  bucket: RoutedServer) -> None:
    _mirror(env, keys)
    env.configure({"torcx.addon_mirror": bucket.base + "/torcx/addons/"})
    path = f"/torcx/addons/{BOARD}/{NEXT_OS}/{ADDON_NAME}"
    bucket.routes[path] = (200, ADDON)
    _runtime(env)
    record = install_addons(env.context("new-os", "addons"))
    assert [(p.os, p.action, p.url) for p in record.placements] == [
        (NEXT_OS, "downloaded", bucket.base + path), (CURRENT_OS, "linked", None)]
    assert bucket.requests == [path]


def test_the_mirror_url_of_an_addon() -> None:
    assert mirrored_addon_url("file:///srv/mirror/addons/", "amd64-usr", "1632.3.0", "docker:17.03.torcx.tgz") == \
        "file:///srv/mirror/addons/amd64-usr/1632.3.0/docker:17.03.torcx.tgz"
    assert mirrored_addon_url("https://m.example/a", "arm64-usr", "1688.5.3", "docker:1.12.torcx.tgz") == \
        "https://m.example/a/arm64-usr/1688.5.3/docker:1.12.torcx.tgz"
    for board, os_version, name, expected in (("../x", "1632.3.0", "d.tgz", "board '../x' is not allowed"),
                                              ("amd64-usr", "1632.3", "d.tgz", "OS version '1632.3' is not allowed"),
                                              ("amd64-usr", "1632.3.0", "../d.tgz", "file name '../d.tgz'"),
                                              ("amd64-usr", "1632.3.0", ".d.tgz", "file name '.d.tgz'")):
        with pytest.raises(Exception, match=expected.replace(".", r"\.")):
            mirrored_addon_url("file:///srv/m", board, os_version, name)


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
