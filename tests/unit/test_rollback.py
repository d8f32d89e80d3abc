"""``torcx-tectonic rollback`` on both backends: what "the version before"
is (the last change the runner kept across boots), what must still be on
disk, the Docker reset rule of a forward change, the run record the status
shows, and a refusal that changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torcx_tectonic import flows
from torcx_tectonic.commands import cli as command
from torcx_tectonic.commands import status
from torcx_tectonic.commands.rollback import roll_back
from torcx_tectonic.errors import NothingToRollBack
from torcx_tectonic.state import AddonsInstalled, OsVersions, RuntimeChange, load_change, load_run, note_change
from torcx_tectonic.steps import runner
from torcx_tectonic.sysext.backend import SysextBackend

from .stepenv import CURRENT_OS, NEXT_OS, StepEnv

LEVELLED = "ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\n"
FLATCAR_OS = "ID=flatcar\nVERSION_ID=3815.2.0\nSYSEXT_LEVEL=1.0\nFLATCAR_BOARD=amd64-usr\n"
UPGRADE = RuntimeChange(runtime="docker", previous="17.03", version="17.06", changed=1_700_000_000.0,
                        by="new-kubelet")


def no_units(names: object) -> dict[str, str]:
    return {}


def upgraded(env: StepEnv, *, booted: str, stores: tuple[str, ...] = ("17.03", "17.06")) -> None:
    """A torcx node after a Kubernetes upgrade moved Docker from 17.03 to
    17.06: both addons in the running OS's store, the profile selecting 17.06,
    the change kept, torcx having booted ``booted``."""
    for version in stores:
        env.write(env.paths.user_store / CURRENT_OS / f"docker:{version}.torcx.tgz", f"docker {version}")
    env.write(env.paths.user_profiles / "tectonic.json", json.dumps(
        {"kind": "profile-manifest-v0", "value": {"images": [{"name": "docker", "reference": "17.06"}]}}))
    env.write(env.paths.next_profile, "tectonic\n")
    env.write(env.config.kubernetes.kubelet_env, "KUBELET_IMAGE_URL=quay.io/coreos/hyperkube\n"
              "KUBELET_IMAGE_TAG=v1.9.1_coreos.0\n")
    env.booted(booted)
    note_change(env.paths, UPGRADE)
    env.write(env.paths.lock_file, "")  # the flows' lock, which the rollback holds: there since the first flow


def selected(env: StepEnv) -> str:
    return str(json.loads((env.paths.user_profiles / "tectonic.json").read_text())["value"]["images"][0]["reference"])


def test_the_runner_keeps_a_runtime_change_across_boots_once(env: StepEnv) -> None:
    flow, step = flows.find_step(env.config, "new-kubelet", "addons") or (None, None)
    assert flow is not None and step is not None
    record = AddonsInstalled(runtime="docker", version="17.06", previous="17.03", runtime_changed=True)
    runner._record_success(flow, step, env.begin("new-kubelet"), record)
    first = load_change(env.paths)
    assert first is not None and (first.previous, first.version, first.by) == ("17.03", "17.06", "new-kubelet")
    env.reboot()  # /run is gone, the change is not
    runner._record_success(flow, step, env.begin("new-kubelet"), record)  # run again before the reboot
    assert load_change(env.paths) == first  # the same change: its time stays the first run's
    unchanged = AddonsInstalled(runtime="docker", version="17.06", previous="17.06", runtime_changed=False)
    runner._record_success(flow, step, env.begin("new-kubelet"), unchanged)
    assert load_change(env.paths) == first


def test_after_the_reboot_into_the_newer_docker_the_older_is_selected_and_its_data_emptied(env: StepEnv) -> None:
    upgraded(env, booted="17.06")
    done = roll_back(env.config, env.paths, units=no_units, clock=lambda: 1_700_000_100.0)
    assert (done.previous, done.version, done.reset) == ("17.06", "17.03", "17.06 → 17.03")
    assert selected(env) == "17.03"
    assert json.loads(env.paths.docker_reset_marker.read_text()) == {"from": "17.06", "to": "17.03"}
    assert done.found == (f"{env.paths.user_store / CURRENT_OS / 'docker:17.03.torcx.tgz'} (OS {CURRENT_OS})",)
    kept = load_change(env.paths)
    assert kept == RuntimeChange("docker", "17.06", "17.03", 1_700_000_100.0, "rollback")
    run = load_run(env.paths, "rollback")
    assert run is not None and run.result == "ok" and run.note is not None
    assert run.note.startswith("rolled back docker from 17.06 to 17.03 (the version before the change of ")
    assert "by new-kubelet), applied at the next boot; docker's data is emptied before it starts (17.06 → 17.03)" \
        in run.note
    # the status shows it, and the running OS's verdict follows the profile (17.03, which 1.9 accepts)
    found = status.gather(env.config, env.paths, units=no_units)
    assert any(f.flow == "rollback" and f.run == run for f in found.flows)
    assert found.reset_pending == "17.06 → 17.03"


def test_before_the_reboot_the_pending_reset_is_dropped(env: StepEnv) -> None:
    upgraded(env, booted="17.03")
    env.write(env.paths.docker_reset_marker, '{"from": "17.03", "to": "17.06"}\n')
    done = roll_back(env.config, env.paths, units=no_units)
    assert (done.previous, done.version, done.reset) == ("17.06", "17.03", None)
    assert selected(env) == "17.03" and not env.paths.docker_reset_marker.exists()


def test_a_pending_os_update_needs_the_older_addon_for_the_next_os_too(env: StepEnv) -> None:
    upgraded(env, booted="17.06")
    env.write(env.paths.update_marker, "")
    env.begin("new-os", OsVersions("amd64-usr", CURRENT_OS, NEXT_OS, "update_engine"))
    before = env.snapshot()
    with pytest.raises(NothingToRollBack, match=rf"docker:17.03, which ran before 17.06, is no longer kept: OS "
                                                rf"{NEXT_OS} finds it in none of .*/var/lib/torcx/store, the vendor "
                                                rf"store of OS {NEXT_OS}$"):
        roll_back(env.config, env.paths, units=no_units)
    assert env.snapshot() == before


@pytest.mark.parametrize(("prepare", "message"), [
    (lambda env: env.paths.runtime_change.unlink(),
     "no change of docker is recorded on this node (/var/lib/torcx-tectonic/runtime-change.json): nothing to roll "
     "back to"),
    (lambda env: (env.paths.user_store / CURRENT_OS / "docker:17.03.torcx.tgz").unlink(),
     "docker:17.03, which ran before 17.06, is no longer kept: OS 1632.3.0 finds it in none of"),
    (lambda env: note_change(env.paths, RuntimeChange("docker", "17.06", "17.03", 1.0, "rollback")),
     "profile tectonic already selects docker:17.06"),
    (lambda env: note_change(env.paths, RuntimeChange("docker", None, "17.06", 1.0, "bootstrap")),
     "docker 17.06 replaced the OS's own"),
], ids=["nothing-recorded", "addon-collected", "already-selected", "from-the-os-own"])
def test_nothing_to_roll_back_to_changes_nothing(env: StepEnv, prepare: object, message: str) -> None:
    upgraded(env, booted="17.06")
    assert callable(prepare)
    prepare(env)
    before = env.snapshot()
    with pytest.raises(NothingToRollBack) as caught:
        roll_back(env.config, env.paths, units=no_units)
    assert message in str(caught.value)
    assert env.snapshot() == before


def test_the_command_says_what_it_did_and_suggests_the_pin(env: StepEnv, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    upgraded(env, booted="17.06")
    config = env.config
    monkeypatch.setattr("torcx_tectonic.config.load", lambda: config)
    monkeypatch.setattr("torcx_tectonic.node.systemd.unit_states", no_units)
    monkeypatch.setattr("torcx_tectonic.commands.rollback.systemd.unit_states", no_units)
    assert command.main(["rollback"], paths=env.paths) == 0
    out = capsys.readouterr().out
    assert out.startswith("torcx-tectonic rollback: docker 17.06 → 17.03, applied at the next boot\n")
    assert "would move this node forward" in out
    assert f"kubectl annotate node {config.kubernetes.node_name} torcx-tectonic.io/pin-runtime=17.03" in out
    # a second rollback has nothing left to do here: 17.06 is the one "before" now, and the profile selects 17.03
    (env.paths.user_store / CURRENT_OS / "docker:17.06.torcx.tgz").unlink()
    assert command.main(["rollback"], paths=env.paths) == 1
    assert "is no longer kept" in capsys.readouterr().err


# --- sysext ----------------------------------------------------------------------------------------------

def sysext_upgraded(env: StepEnv, images: tuple[str, ...] = ("24.0.9", "25.0.3")) -> Path:
    """A Flatcar node whose link moved from 24.0.9 to 25.0.3, both images
    kept with the extension-releases the install step cached."""
    env.configure({"runtime.backend": "sysext"})
    env.write(env.paths.os_release, FLATCAR_OS)
    store = env.paths.image_store / "docker"
    for version in images:
        env.write(store / f"docker-{version}-x86-64.raw", f"image {version}")
        env.write(env.paths.cache_dir / "sysext" / f"docker-{version}-x86-64.raw.release", LEVELLED)
    env.paths.extensions_dir.mkdir(parents=True)
    link = env.paths.extensions_dir / "docker.raw"
    os.symlink("/opt/extensions/docker/docker-25.0.3-x86-64.raw", link)
    note_change(env.paths, RuntimeChange("docker", "24.0.9", "25.0.3", 1.0, "new-kubelet"))
    env.write(env.paths.lock_file, "")
    return link


def test_a_sysext_rollback_links_the_kept_image_again(env: StepEnv) -> None:
    link = sysext_upgraded(env)
    env.write(env.root / "usr/lib/extension-release.d/extension-release.docker", LEVELLED)  # 25.0.3 is merged
    assert SysextBackend(env.config).booted(env.paths) == "25.0.3"
    done = roll_back(env.config, env.paths, units=no_units)
    assert (done.previous, done.version, done.activated) == ("25.0.3", "24.0.9", "at the next boot")
    assert os.readlink(link) == "/opt/extensions/docker/docker-24.0.9-x86-64.raw"
    assert json.loads(env.paths.docker_reset_marker.read_text()) == {"from": "25.0.3", "to": "24.0.9"}
    assert os.readlink(env.paths.extensions_dir / "docker-flatcar.raw") == "/dev/null"
    # until the next boot, 25.0.3 still runs: the rollback's record says what the link named before it
    found = status.gather(env.config, env.paths, units=no_units)
    assert found.booted == "25.0.3"
    assert found.current.runtime_version == "24.0.9"  # what the running OS merges at its next boot


def test_a_sysext_rollback_refuses_an_image_gc_removed_or_one_that_does_not_fit(env: StepEnv) -> None:
    sysext_upgraded(env, images=("25.0.3",))
    before = env.snapshot()
    with pytest.raises(NothingToRollBack, match=r"docker 24.0.9, which ran before 25.0.3, is no longer kept: "
                                                r"/opt/extensions/docker/docker-24.0.9-x86-64.raw is missing"):
        roll_back(env.config, env.paths, units=no_units)
    assert env.snapshot() == before
    env.write(env.paths.image_store / "docker" / "docker-24.0.9-x86-64.raw", "image")
    env.write(env.paths.cache_dir / "sysext" / "docker-24.0.9-x86-64.raw.release",
              "ID=flatcar\nSYSEXT_LEVEL=2.0\nARCHITECTURE=x86-64\n")
    before = env.snapshot()
    with pytest.raises(NothingToRollBack, match="docker-24.0.9-x86-64.raw does not fit OS 3815.2.0: "
                                                "docker-24.0.9-x86-64.raw has SYSEXT_LEVEL=2.0"):
        roll_back(env.config, env.paths, units=no_units)
    assert env.snapshot() == before
