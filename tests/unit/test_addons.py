"""Steps runtime and addons: choose the Docker version, put its addon into
the stores of the OS versions that need it, select it; collect old stores.

The bucket is a real local HTTP server (tests/unit/helpers.py http_server);
manifests are served really signed (the ``keys`` fixture) where the runtime
step fetches them, and put into the verified cache directly where a test
starts at the addon step.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from torcx_tectonic.errors import InputError, VerificationError
from torcx_tectonic.state import (
    AddonPlacement,
    AddonsInstalled,
    KubernetesVersion,
    ManifestCache,
    OsVersions,
    RuntimeChoice,
    RuntimePin,
    StateError,
    StoresCollected,
)
from torcx_tectonic.steps.addons import collect_stores, install_addons
from torcx_tectonic.steps.runtime import choose_runtime
from torcx_tectonic.strategy import NoRuntimeVersion

from .helpers import Keys, RoutedServer
from .stepenv import (
    ADDON,
    ADDON_NAME,
    BOARD,
    CURRENT_OS,
    KUBE,
    MAPPINGS,
    NEXT_OS,
    VENDOR_DOCKER,
    StepEnv,
    addon_manifest,
    manifest,
    serve_manifest,
    use_bucket,
)

ADDON_PATH = "/" + ADDON_NAME


def _url(bucket: RoutedServer, path: str = ADDON_PATH) -> dict[str, str]:
    return {"url": bucket.base + path}


def _vendor(env: StepEnv) -> dict[str, str]:
    """A vendor-store location as manifests write it: the node's path (the
    step looks for the file under the test root)."""
    return {"path": "/usr/share/torcx/store/" + ADDON_NAME}


def _chosen(env: StepEnv, bucket: RoutedServer, manifests: Mapping[str, bytes], current: str = CURRENT_OS,
            upcoming: str | None = NEXT_OS, version: str | None = "17.03") -> None:
    """The new-os run up to the addon step: its OS versions, and the runtime
    choice for the OS versions of ``manifests`` (in that order), whose
    verified manifests are in the cache."""
    use_bucket(env, bucket)
    digests = {os_version: env.cache_manifest(os_version, raw) for os_version, raw in manifests.items()}
    env.begin("new-os", OsVersions(BOARD, current, upcoming, "update_engine"), KubernetesVersion(KUBE, "x"),
              RuntimeChoice(runtime="docker", version=version, os_versions=tuple(manifests), kube_version=KUBE,
                            preferred=("17.03", "1.12"), mapping_source="test", manifests=digests))


def _install(env: StepEnv) -> AddonsInstalled:
    return install_addons(env.context("new-os", "addons"))


def _stat(env: StepEnv) -> dict[str, tuple[bytes, int, int]]:
    """Every file under the root: content, inode and mtime (a rewrite changes them)."""
    return {str(p.relative_to(env.root)): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(env.root.rglob("*")) if p.is_file()}


def _store(env: StepEnv, os_version: str) -> Path:
    return env.paths.user_store / os_version / ADDON_NAME


def _profile_images(env: StepEnv, name: str = "tectonic") -> list[dict[str, str]]:
    images: list[dict[str, str]] = json.loads((env.paths.user_profiles / f"{name}.json").read_text())["value"]["images"]
    return images


# --- install ------------------------------------------------------------------------------------------

def test_install_downloads_for_both_os_versions_and_selects_the_profile(env: StepEnv, bucket: RoutedServer) -> None:
    next_addon = b"docker 17.03 built for 1688.5.3 " * 150
    bucket.routes["/next" + ADDON_PATH] = (200, next_addon)
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {NEXT_OS: addon_manifest(_url(bucket, "/next" + ADDON_PATH), data=next_addon),
                          CURRENT_OS: addon_manifest(_url(bucket))})
    record = _install(env)
    assert record.placements == (
        AddonPlacement(NEXT_OS, "downloaded", str(_store(env, NEXT_OS)), bucket.base + "/next" + ADDON_PATH,
                       len(next_addon)),
        AddonPlacement(CURRENT_OS, "downloaded", str(_store(env, CURRENT_OS)), bucket.base + ADDON_PATH, len(ADDON)))
    assert (env.paths.user_store / NEXT_OS / ADDON_NAME).read_bytes() == next_addon
    assert (env.paths.user_store / CURRENT_OS / ADDON_NAME).read_bytes() == ADDON
    assert _profile_images(env) == [{"name": "docker", "reference": "17.03"}]
    assert env.paths.next_profile.read_text() == "tectonic\n"
    assert (record.runtime, record.version, record.profile) == ("docker", "17.03", "tectonic")
    assert record.changed_files == (str(env.paths.user_profiles / "tectonic.json"), str(env.paths.next_profile))
    assert (record.previous, record.runtime_changed) == (VENDOR_DOCKER, True)
    assert json.loads(env.paths.docker_reset_marker.read_text()) == {"from": VENDOR_DOCKER, "to": "17.03"}
    assert record.counters() == {"downloaded_bytes": len(next_addon) + len(ADDON), "addons_installed": 2}


def test_the_same_bytes_for_both_os_versions_are_downloaded_once_and_linked(env: StepEnv,
                                                                            bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    raw = addon_manifest(_url(bucket))
    _chosen(env, bucket, {NEXT_OS: raw, CURRENT_OS: raw})
    record = _install(env)
    assert [(p.os, p.action) for p in record.placements] == [(NEXT_OS, "downloaded"), (CURRENT_OS, "linked")]
    assert record.placements[1] == AddonPlacement(CURRENT_OS, "linked", str(_store(env, CURRENT_OS)))
    first, second = (env.paths.user_store / v / ADDON_NAME for v in (NEXT_OS, CURRENT_OS))
    assert first.stat().st_ino == second.stat().st_ino and second.read_bytes() == ADDON
    assert bucket.requests.count(ADDON_PATH) == 1
    assert [p.name for p in second.parent.iterdir()] == [ADDON_NAME]  # no temporary link left
    assert record.counters() == {"downloaded_bytes": len(ADDON), "addons_installed": 2}


def test_a_second_run_downloads_and_rewrites_nothing(env: StepEnv, bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    raw = addon_manifest(_url(bucket))
    _chosen(env, bucket, {NEXT_OS: raw, CURRENT_OS: raw})
    _install(env)
    before, requests = _stat(env), len(bucket.requests)
    record = _install(env)
    assert [p.action for p in record.placements] == ["present", "present"]
    assert record.changed_files == ()
    assert len(bucket.requests) == requests
    assert _stat(env) == before
    assert record.counters() == {"downloaded_bytes": 0, "addons_installed": 0}


def test_the_vendor_addon_of_the_next_os_is_not_copied(env: StepEnv, bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {NEXT_OS: addon_manifest(_vendor(env), _url(bucket))})
    record = _install(env)
    assert record.placements == (AddonPlacement(NEXT_OS, "vendor", _vendor(env)["path"]),)
    assert bucket.requests == []
    assert not env.paths.user_store.exists()


def test_the_vendor_addon_of_the_running_os_is_checked_and_downloaded_when_absent(env: StepEnv,
                                                                                   bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {CURRENT_OS: addon_manifest(_vendor(env), _url(bucket))}, upcoming=None)
    assert [p.action for p in _install(env).placements] == ["downloaded"]
    env.write(env.paths.vendor_store / ADDON_NAME, "")
    (env.paths.vendor_store / ADDON_NAME).write_bytes(ADDON)
    assert _install(env).placements == (AddonPlacement(CURRENT_OS, "vendor", _vendor(env)["path"]),)
    assert bucket.requests.count(ADDON_PATH) == 1


def test_a_vendor_addon_of_the_running_os_with_the_wrong_hash_is_not_used(env: StepEnv,
                                                                          bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    env.write(env.paths.vendor_store / ADDON_NAME, "a different docker")
    _chosen(env, bucket, {CURRENT_OS: addon_manifest(_vendor(env), _url(bucket))}, upcoming=None)
    assert [p.action for p in _install(env).placements] == ["downloaded"]
    assert (env.paths.user_store / CURRENT_OS / ADDON_NAME).read_bytes() == ADDON


def test_a_vendor_path_as_manifests_write_it_is_found_under_the_node_root(env: StepEnv,
                                                                          bucket: RoutedServer) -> None:
    _chosen(env, bucket, {NEXT_OS: addon_manifest({"path": "/usr/share/torcx/store/" + ADDON_NAME})})
    assert [p.action for p in _install(env).placements] == ["vendor"]


def test_a_wrong_hash_installs_nothing_and_leaves_the_profile_alone(env: StepEnv, bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, b"not the docker the manifest lists")
    _chosen(env, bucket, {NEXT_OS: addon_manifest(_url(bucket))})
    before = _stat(env)
    with pytest.raises(VerificationError, match="sha512 mismatch for docker:17.03.torcx.tgz"):
        _install(env)
    assert _stat(env) == before


def test_an_addon_without_url_or_vendor_copy_fails(env: StepEnv, bucket: RoutedServer) -> None:
    _chosen(env, bucket, {CURRENT_OS: addon_manifest({"path": "/opt/docker.tgz"})}, upcoming=None)
    before = _stat(env)
    with pytest.raises(InputError, match="manifest for OS 1632.3.0: docker 17.03 has no url and is not in the vendor"):
        _install(env)
    assert _stat(env) == before


def test_no_version_installs_nothing(env: StepEnv, bucket: RoutedServer) -> None:
    _chosen(env, bucket, {}, current="1465.8.0", upcoming=None, version=None)
    before = _stat(env)
    assert _install(env) == AddonsInstalled(runtime="docker", version=None)
    assert _stat(env) == before
    assert bucket.requests == []


def test_a_pending_reset_is_dropped_when_the_booted_docker_is_selected_again(env: StepEnv,
                                                                             bucket: RoutedServer) -> None:
    # 17.06 was selected (reset arranged), then the kubelet went back before any reboot
    env.booted("17.03")
    env.write(env.paths.docker_reset_marker, '{"from": "17.03", "to": "17.06"}\n')
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {CURRENT_OS: addon_manifest(_url(bucket))}, upcoming=None)
    record = _install(env)
    assert (record.previous, record.runtime_changed) == ("17.03", False)
    assert not env.paths.docker_reset_marker.exists()


def test_a_pending_reset_stays_when_torcx_left_no_record(env: StepEnv, bucket: RoutedServer) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {CURRENT_OS: addon_manifest(_url(bucket))}, upcoming=None)
    assert _install(env).runtime_changed is True
    assert env.paths.docker_reset_marker.exists()
    _install(env)  # the next profile now names 17.03: that is not what booted
    assert json.loads(env.paths.docker_reset_marker.read_text()) == {"from": VENDOR_DOCKER, "to": "17.03"}


def test_a_user_profile_already_next_is_updated(env: StepEnv, bucket: RoutedServer) -> None:
    env.write(env.paths.user_profiles / "mine.json", json.dumps({"kind": "profile-manifest-v1", "value": {"images": [
        {"name": "rkt", "reference": "1.29"}, {"name": "docker", "reference": "1.12"}]}}))
    env.write(env.paths.next_profile, "mine\n")
    bucket.routes[ADDON_PATH] = (200, ADDON)
    _chosen(env, bucket, {CURRENT_OS: addon_manifest(_url(bucket))}, upcoming=None)
    record = _install(env)
    assert (record.profile, record.previous, record.changed_files) == (
        "mine", "1.12", (str(env.paths.user_profiles / "mine.json"),))
    assert _profile_images(env, "mine") == [{"name": "rkt", "reference": "1.29"},
                                            {"name": "docker", "reference": "17.03"}]
    assert not (env.paths.user_profiles / "tectonic.json").exists()


def test_the_addon_step_needs_the_runtime_choice(env: StepEnv) -> None:
    env.begin("new-os", OsVersions(BOARD, CURRENT_OS, NEXT_OS, "x"))
    with pytest.raises(StateError, match="flow new-os: no runtime-choice recorded in this run"):
        _install(env)


def test_the_chosen_version_must_be_in_the_cached_manifest(env: StepEnv, bucket: RoutedServer) -> None:
    _chosen(env, bucket, {NEXT_OS: addon_manifest(_url(bucket), version="1.12")})
    with pytest.raises(InputError, match="the manifest for OS 1688.5.3 has no docker 17.03, which the runtime step "
                                         "chose from it"):
        _install(env)


def test_an_uncached_manifest_is_a_state_error(env: StepEnv, bucket: RoutedServer) -> None:
    _chosen(env, bucket, {NEXT_OS: addon_manifest(_url(bucket))})
    ManifestCache(env.paths.cache_dir).path(BOARD, NEXT_OS).unlink()
    with pytest.raises(StateError, match="no verified manifest for amd64-usr 1688.5.3 cached"):
        _install(env)


# --- runtime choice, then install from exactly the manifests it verified -------------------------------

def _runtime_step(env: StepEnv, bucket: RoutedServer, keys: Keys | None, current: str = CURRENT_OS,
                  upcoming: str | None = NEXT_OS) -> RuntimeChoice:
    use_bucket(env, bucket, keys)
    env.write(env.config.kubernetes.runtime_mappings, MAPPINGS)
    env.begin("new-os", OsVersions(BOARD, current, upcoming, "update_engine"), KubernetesVersion(KUBE, "x"))
    return choose_runtime(env.context("new-os", "docker-version"))


def test_the_runtime_step_verifies_caches_and_names_the_manifests(env: StepEnv, bucket: RoutedServer,
                                                                  keys: Keys) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    next_raw = manifest([("1.12", b"old", [_url(bucket, "/old")]), ("17.03", ADDON, [_url(bucket)])])
    current_raw = manifest([("1.12", b"old", [_url(bucket, "/old")])])
    serve_manifest(bucket, NEXT_OS, next_raw, keys)
    serve_manifest(bucket, CURRENT_OS, current_raw, keys)
    choice = _runtime_step(env, bucket, keys)
    assert (choice.version, choice.os_versions, choice.preferred) == ("17.03", (NEXT_OS,), ("17.03", "1.12"))
    assert choice.offered == {NEXT_OS: ("1.12", "17.03"), CURRENT_OS: ("1.12",)}
    assert choice.manifests == {NEXT_OS: hashlib.sha256(next_raw).hexdigest(),
                                CURRENT_OS: hashlib.sha256(current_raw).hexdigest()}
    assert choice.mapping_source == str(env.config.kubernetes.runtime_mappings)
    cache = ManifestCache(env.paths.cache_dir)
    assert cache.get(BOARD, NEXT_OS, choice.manifests[NEXT_OS]) == next_raw
    env.state("new-os").save(choice)
    record = _install(env)
    assert [(p.os, p.action) for p in record.placements] == [(NEXT_OS, "downloaded")]


def test_a_cached_manifest_changed_after_verification_is_refused(env: StepEnv, bucket: RoutedServer,
                                                                 keys: Keys) -> None:
    bucket.routes[ADDON_PATH] = (200, ADDON)
    serve_manifest(bucket, NEXT_OS, addon_manifest(_url(bucket)), keys)
    serve_manifest(bucket, CURRENT_OS, addon_manifest(_url(bucket)), keys)
    choice = _runtime_step(env, bucket, keys)
    env.state("new-os").save(choice)
    cached = ManifestCache(env.paths.cache_dir).path(BOARD, NEXT_OS)
    evil = b"evil docker"
    bucket.routes["/evil"] = (200, evil)
    cached.write_bytes(addon_manifest({"url": bucket.base + "/evil"}, data=evil))
    before = _stat(env)
    with pytest.raises(StateError, match="changed since it was verified in this run"):
        _install(env)
    assert "/evil" not in bucket.requests and ADDON_PATH not in bucket.requests
    assert _stat(env) == before


def test_an_unsigned_manifest_is_refused_and_not_cached(env: StepEnv, bucket: RoutedServer, keys: Keys) -> None:
    serve_manifest(bucket, NEXT_OS, addon_manifest(_url(bucket)))  # no .asc
    with pytest.raises(VerificationError, match="is not signed"):
        _runtime_step(env, bucket, keys)
    assert not ManifestCache(env.paths.cache_dir).path(BOARD, NEXT_OS).exists()


def test_no_known_docker_version_names_kubernetes_the_mappings_and_the_offer(env: StepEnv, bucket: RoutedServer,
                                                                             keys: Keys) -> None:
    serve_manifest(bucket, NEXT_OS, manifest([("18.06", ADDON, [_url(bucket)])]), keys)
    serve_manifest(bucket, CURRENT_OS, manifest([("18.06", ADDON, [_url(bucket)])]), keys)
    with pytest.raises(NoRuntimeVersion) as caught:
        _runtime_step(env, bucket, keys)
    message = str(caught.value)
    assert f"no docker version for Kubernetes {KUBE}" in message
    assert "runtime-mappings.yaml accept 17.03, 1.12" in message
    assert "the manifest for OS 1688.5.3 offers 18.06" in message


def test_a_configured_pin_wins_over_the_mappings_and_is_kept_for_the_run(env: StepEnv, bucket: RoutedServer,
                                                                        keys: Keys) -> None:
    both = manifest([("17.03", ADDON, [_url(bucket)]), ("1.12", b"old", [_url(bucket, "/old")])])
    serve_manifest(bucket, NEXT_OS, both, keys)
    serve_manifest(bucket, CURRENT_OS, both, keys)
    env.configure({"runtime.pin": "1.12"})
    choice = _runtime_step(env, bucket, keys)
    assert (choice.version, choice.os_versions) == ("1.12", (NEXT_OS, CURRENT_OS))
    # no kubeconfig: the annotation cannot be read, and the pin's source says so
    assert env.state("new-os").load(RuntimePin) == RuntimePin(
        "1.12", "[runtime] pin (the node's annotation could not be read)")


def test_an_api_server_that_is_down_leaves_the_configured_pin_and_says_so(env: StepEnv, bucket: RoutedServer,
                                                                         keys: Keys,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    both = manifest([("17.03", ADDON, [_url(bucket)]), ("1.12", b"old", [_url(bucket, "/old")])])
    serve_manifest(bucket, NEXT_OS, both, keys)
    serve_manifest(bucket, CURRENT_OS, both, keys)
    env.refused_api_server()
    env.configure({"runtime.pin": "1.12", "network.backoff_factor": "0.01"})
    caplog.set_level(logging.INFO)
    choice = _runtime_step(env, bucket, keys)
    assert choice.version == "1.12"
    assert "the node's torcx-tectonic.io/pin-runtime annotation could not be read: using [runtime] pin (1.12)" \
        in caplog.text
    assert env.state("new-os").load(RuntimePin).source == "[runtime] pin (the node's annotation could not be read)"
    assert "using the node-local runtime mappings" in caplog.text  # the mappings found it down first,
    assert "the annotation torcx-tectonic.io/pin-runtime is not known" not in caplog.text  # so it is not asked again


def test_a_pin_the_next_os_does_not_offer_fails_naming_the_pin_and_the_offer(env: StepEnv, bucket: RoutedServer,
                                                                              keys: Keys) -> None:
    serve_manifest(bucket, NEXT_OS, manifest([("17.03", ADDON, [_url(bucket)])]), keys)
    serve_manifest(bucket, CURRENT_OS, manifest([("1.12", b"old", [_url(bucket, "/old")])]), keys)
    env.configure({"runtime.pin": "1.12"})
    with pytest.raises(NoRuntimeVersion, match=r"docker is pinned to 1.12 \(\[runtime\] pin .*\), which is not "
                       r"offered: the manifest for OS 1688.5.3 offers 17.03"):
        _runtime_step(env, bucket, keys)
    assert env.state("new-os").load(RuntimePin).version == "1.12"


def test_a_pin_the_mappings_never_list_is_refused(env: StepEnv, bucket: RoutedServer, keys: Keys) -> None:
    serve_manifest(bucket, NEXT_OS, addon_manifest(_url(bucket)), keys)
    serve_manifest(bucket, CURRENT_OS, addon_manifest(_url(bucket)), keys)
    env.configure({"runtime.pin": "1.10"})
    with pytest.raises(InputError, match="pin 1.10 names a docker version the runtime mappings never list for any "
                                         "Kubernetes minor"):
        _runtime_step(env, bucket, keys)
    assert env.state("new-os").load(RuntimePin).source.startswith("refused: [runtime] pin")


def test_the_runtime_choice_before_the_addon_epoch_needs_no_bucket(env: StepEnv, bucket: RoutedServer) -> None:
    choice = _runtime_step(env, bucket, None, current="1465.8.0", upcoming=None)
    assert choice == RuntimeChoice(runtime="docker", version=None, os_versions=(), kube_version=KUBE,
                                   reason="OS 1465.8.0 is older than 1520.3.0: no remote addons")
    assert bucket.requests == []


def test_an_os_update_across_the_epoch_installs_only_for_the_new_os(env: StepEnv, bucket: RoutedServer) -> None:
    serve_manifest(bucket, "1520.3.0", addon_manifest(_url(bucket)))
    choice = _runtime_step(env, bucket, None, current="1465.8.0", upcoming="1520.3.0")
    assert (choice.version, choice.os_versions) == ("17.03", ("1520.3.0",))
    assert [r for r in bucket.requests if "1465.8.0" in r] == []


# --- gc -----------------------------------------------------------------------------------------------

def test_gc_removes_versioned_stores_older_than_the_running_os(env: StepEnv) -> None:
    for version in ("1576.4.0", "1632.3.0", "1688.5.3", "not-a-version"):
        (env.paths.user_store / version).mkdir(parents=True)
    env.write(env.paths.user_store / "1520.3.0" / ADDON_NAME, "old")
    env.write(env.paths.user_store / ADDON_NAME, "unversioned")
    env.begin("new-os", OsVersions(BOARD, CURRENT_OS, NEXT_OS, "x"))
    record = collect_stores(env.context("new-os", "gc"))
    assert record == StoresCollected(current_os=CURRENT_OS, removed=("1520.3.0", "1576.4.0"))
    assert sorted(p.name for p in env.paths.user_store.iterdir()) == sorted([ADDON_NAME, "1632.3.0", "1688.5.3",
                                                                             "not-a-version"])


def test_gc_without_a_user_store(env: StepEnv) -> None:
    env.begin("new-os", OsVersions(BOARD, CURRENT_OS, NEXT_OS, "x"))
    assert collect_stores(env.context("new-os", "gc")) == StoresCollected(current_os=CURRENT_OS)

