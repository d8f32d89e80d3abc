"""Self-test of the node harness: nspawn node and update_engine stand-in.

Every product integration test stands on :class:`simnode.node.Node`
and the update_engine stand-in; if a node leaked mounts or processes, or the
stand-in got the D-Bus ordering wrong, product tests would be flaky or prove
nothing.  The state-machine tests run anywhere; the node tests need root and
``systemd-nspawn`` and boot real containers (about a second each).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from simnode.addons import make_addon
from simnode.node import REBOOT_EXIT_CODE, Node, NodeError, missing_requirements, mounts_under
from simnode.update_engine import (
    CHECKING_FOR_UPDATE,
    DOWNLOADING,
    IDLE,
    REPORTING_ERROR_EVENT,
    UPDATE_AVAILABLE,
    UPDATED_NEED_REBOOT,
    Engine,
    ScenarioError,
    Status,
    parse_scenario,
)

UE = ("com.coreos.update1", "/com/coreos/update1", "com.coreos.update1.Manager")


needs_nspawn = pytest.mark.skipif(missing_requirements() is not None, reason=str(missing_requirements()))


@pytest.fixture
def empty_bundle(tmp_path: Path) -> Path:
    """A `make install DESTDIR=` tree with nothing in it: tests the harness alone."""
    for d in ("usr", "etc"):
        (tmp_path / "bundle" / d).mkdir(parents=True)
    return tmp_path / "bundle"


# --------------------------------------------------------------- pure engine
class FakeLoop:
    """Collects signals and runs scheduled steps on demand, so order is checkable."""

    def __init__(self) -> None:
        self.signals: list[tuple[int, float, str, str, int]] = []
        self.pending: list[Callable[[], None]] = []

    def emit(self, status: Status) -> None:
        self.signals.append(status.as_tuple())

    def schedule(self, _delay: float, fn: Callable[[], None]) -> None:
        self.pending.append(fn)

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0)()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Engine, FakeLoop, Path]]:
    loop = FakeLoop()
    scenario = tmp_path / "scenario.json"
    eng = Engine(
        emit=loop.emit,
        schedule=loop.schedule,
        marker=tmp_path / "marker",
        state_dir=tmp_path / "state",
        scenario_files=(scenario,),
    )
    eng.start()
    yield eng, loop, scenario


def ops(loop: FakeLoop) -> list[str]:
    return [s[2] for s in loop.signals]


def test_engine_signals_checking_before_returning_and_ignores_busy(
    engine: tuple[Engine, FakeLoop, Path],
) -> None:
    eng, loop, scenario = engine
    scenario.write_text('{"mode": ["error", "update"], "new_version": "1688.5.3"}')
    eng.attempt_update()
    assert ops(loop) == [CHECKING_FOR_UPDATE]  # before any main-loop step
    eng.attempt_update()  # busy: ignored but counted
    loop.drain()
    assert ops(loop)[-2:] == [REPORTING_ERROR_EVENT, IDLE]
    eng.attempt_update()
    loop.drain()
    assert ops(loop)[-1] == UPDATED_NEED_REBOOT
    assert eng.status.new_version == "1688.5.3"
    assert (eng.marker).exists()
    eng.attempt_update()  # already updated: nothing
    assert loop.pending == []
    assert (eng.state_dir / "attempts").read_text() == "4\n"
    assert eng.reset_status() and not eng.marker.exists()
    assert eng.status.current_operation == IDLE


def test_engine_hang_and_none(engine: tuple[Engine, FakeLoop, Path]) -> None:
    eng, loop, scenario = engine
    scenario.write_text('{"mode": "none"}')
    eng.attempt_update()
    loop.drain()
    assert ops(loop) == [CHECKING_FOR_UPDATE, IDLE]
    scenario.write_text('{"mode": "hang"}')
    eng.attempt_update()
    loop.drain()
    assert ops(loop)[-3:] == [CHECKING_FOR_UPDATE, UPDATE_AVAILABLE, DOWNLOADING]
    assert not eng.reset_status()  # not allowed while busy, as in the real one


def test_engine_restart_with_marker_reports_need_reboot(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "new_version").write_text("1688.5.3\n")
    loop = FakeLoop()
    eng = Engine(
        emit=loop.emit,
        schedule=loop.schedule,
        marker=tmp_path / "marker",
        state_dir=tmp_path / "state",
        scenario_files=(),
    )
    eng.start()
    assert eng.status.as_tuple()[2:4] == (UPDATED_NEED_REBOOT, "1688.5.3")


@pytest.mark.parametrize(
    "raw",
    [{"mode": "upgrade"}, {"mode": []}, {"new_version": 1688}, {"step_seconds": -1}, {"modes": "update"}],
)
def test_bad_scenarios_are_rejected(raw: dict[str, object]) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(raw)


def test_an_empty_new_version_is_a_fault_a_scenario_may_ask_for() -> None:
    # update_engine reporting UPDATED_NEED_REBOOT with an empty version (the fault campaign's case)
    assert parse_scenario({"mode": "update", "new_version": ""}).new_version == ""


# ---------------------------------------------------------------- real nodes
@pytest.mark.integration
@needs_nspawn
def test_node_boots_updates_reboots_and_leaves_nothing(empty_bundle: Path, tmp_path: Path) -> None:
    addon = tmp_path / "docker.tgz"
    addon.write_bytes(b"not really a tarball")
    with Node(
        bundle=empty_bundle,
        os_version="1632.3.0",
        vendor_addons={"docker:com.coreos.cl.torcx.tgz": addon},
        files={"/etc/kubernetes/kubelet.env": "KUBELET_IMAGE_TAG=v1.8.4\n"},
        update_engine={"mode": "update", "new_version": "1688.5.3", "step_seconds": 0.05},
    ) as node:
        seconds = node.boot()
        assert seconds < 30 and node.boot_state == "running", node.systemctl("--failed", check=False).stdout
        tree = node.tmpdir
        nspawn_pid, leader = node._proc.pid if node._proc else -1, node.leader

        # Container Linux look.
        release = node.run("cat", "/etc/os-release").stdout
        assert "ID=coreos\n" in release and "VERSION_ID=1632.3.0\n" in release
        assert 'COREOS_BOARD="amd64-usr"' in release
        assert node.run("readlink", "/etc/os-release").stdout.strip() == "../usr/lib/os-release"
        assert node.read("/etc/os-release") == release
        assert '"reference": "com.coreos.cl"' in node.read("/usr/share/torcx/profiles/vendor.json")
        assert node.exists("/usr/share/torcx/store/docker:com.coreos.cl.torcx.tgz")
        assert node.read("/etc/kubernetes/kubelet.env").startswith("KUBELET_IMAGE_TAG=")
        assert node.systemctl("is-enabled", "kubelet.service", check=False).stdout.strip() == "disabled"
        assert node.run("touch", "/usr/x", check=False).returncode != 0  # /usr is read-only

        # update_engine stand-in on the real system bus.
        assert node.update_engine_status() == (0, 0.0, IDLE, "0.0.0.0", 0)
        # Everything the stand-in sends (signals and method returns), in bus order.
        monitor = "timeout 20 dbus-monitor --system \"sender='com.coreos.update1'\" > /run/monitor.log 2>&1 &"
        node.run("sh", "-c", monitor)
        node.wait_for(
            lambda: node.exists("/run/monitor.log") and "NameAcquired" in node.read("/run/monitor.log"),
            timeout=10,
            what="dbus-monitor to listen",
        )
        node.run("busctl", "call", *UE, "AttemptUpdate")
        node.wait_for(node.update_marker_exists, timeout=15, what="the update marker")
        status = node.update_engine_status()
        assert status[2:4] == (UPDATED_NEED_REBOOT, "1688.5.3")
        node.run("busctl", "call", *UE, "AttemptUpdate")  # already updated: ignored
        assert node.update_engine_attempts() == 2
        assert node.update_engine_status()[2] == UPDATED_NEED_REBOOT
        node.wait_for(lambda: UPDATED_NEED_REBOOT in node.read("/run/monitor.log"), timeout=10, what="the signals")
        log = node.read("/run/monitor.log")
        seen = [w.strip('"') for w in log.split() if w.startswith('"UPDATE_STATUS_')]
        assert seen[0] == CHECKING_FOR_UPDATE and seen[-1] == UPDATED_NEED_REBOOT, seen
        # The CHECKING_FOR_UPDATE signal goes out before AttemptUpdate's reply.
        assert log.index(CHECKING_FOR_UPDATE) < log.index("method return"), log
        assert "AttemptUpdate #2 ignored" in node.journal("update-engine.service")

        # Reboot request: nspawn exits 133; the journal survives; boot into the new OS.
        node.systemctl("reboot", check=False)
        assert node.wait_exit(30) == REBOOT_EXIT_CODE and node.reboot_requested
        assert UPDATED_NEED_REBOOT in node.journal("update-engine.service")  # read from disk
        node.boot_again(os_version="1688.5.3")
        assert "VERSION_ID=1688.5.3\n" in node.read("/etc/os-release")
        assert not node.update_marker_exists()  # /run is fresh after a reboot
        assert node.update_engine_status()[2] == IDLE
        assert node.read("/etc/kubernetes/kubelet.env").startswith("KUBELET_IMAGE_TAG=")
        leader2 = node.leader

    assert not tree.exists()
    assert mounts_under(tree) == []
    for pid in (nspawn_pid, leader, leader2):
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} survived the node"


@pytest.mark.integration
@needs_nspawn
def test_boot_timeout_is_clear_and_cleans_up(empty_bundle: Path) -> None:
    unit = "[Unit]\nDescription=blocks boot\n[Service]\nType=oneshot\nExecStart=/bin/sleep 300\n"
    with Node(
        bundle=empty_bundle,
        os_version="1632.3.0",
        board=None,
        files={"/etc/systemd/system/blocker.service": unit},
    ) as node:
        wants = node.host_path("/etc/systemd/system/multi-user.target.wants")
        (wants / "blocker.service").symlink_to("../blocker.service")
        with pytest.raises(NodeError, match="did not finish booting") as err:
            node.boot(timeout=3)
        assert "blocker.service" in str(err.value)  # the pending job is named
        assert not node.running
        assert "COREOS_BOARD" not in node.read("/etc/os-release")
        tree = node.tmpdir
    assert not tree.exists() and mounts_under(tree) == []


@pytest.mark.integration
@needs_nspawn
def test_the_torcx_stand_in_applies_the_next_profile_at_boot_and_seals_only_a_whole_apply(
        empty_bundle: Path, tmp_path: Path) -> None:
    make_addon(tmp_path / "vendor.tgz", "docker", "com.coreos.cl")
    profile = '{"kind": "profile-manifest-v1", "value": {"images": [{"name": "docker", "reference": "%s"}]}}\n'
    with Node(bundle=empty_bundle, os_version="1632.3.0",
              vendor_addons={"docker:com.coreos.cl.torcx.tgz": tmp_path / "vendor.tgz"}) as node:
        # First boot: no next-profile, so the vendor profile, from the vendor store.
        node.boot()
        assert node.read("/run/metadata/torcx") == (
            'TORCX_LOWER_PROFILES="vendor"\nTORCX_UPPER_PROFILE="vendor"\n'
            'TORCX_PROFILE_PATH="/run/torcx/profile.json"\nTORCX_BINDIR="/run/torcx/bin"\n'
            'TORCX_UNPACKDIR="/run/torcx/unpack"\n')
        assert json.loads(node.read("/run/torcx/profile.json"))["value"]["images"] == [
            {"name": "docker", "reference": "com.coreos.cl"}]
        assert node.run("/run/torcx/bin/docker").stdout == "Docker version com.coreos.cl, build torcx-test\n"
        assert "Test addon docker:com.coreos.cl" in node.read("/run/systemd/system/docker.service")

        # A user profile named with torcx's tolerated .json suffix, its addon in the OS's versioned store.
        make_addon(node.host_path("/var/lib/torcx/store/1632.3.0/docker:17.03.torcx.tgz"), "docker", "17.03")
        node.write("/etc/torcx/profiles/tectonic.json", profile % "17.03")
        node.write("/etc/torcx/next-profile", "tectonic.json\n")
        node.shutdown()
        node.boot_again()
        assert 'TORCX_UPPER_PROFILE="tectonic"\n' in node.read("/run/metadata/torcx")
        assert node.run("/run/torcx/bin/docker").stdout == "Docker version 17.03, build torcx-test\n"

        # The addon only in another OS's versioned store: torcx looks at the booting OS's only, so the
        # apply fails and nothing is sealed (what booted is then unknown, as on a real node).
        make_addon(node.host_path("/var/lib/torcx/store/1688.5.3/docker:17.06.torcx.tgz"), "docker", "17.06")
        node.write("/etc/torcx/profiles/tectonic.json", profile % "17.06")
        node.shutdown()
        node.boot_again()
        assert not node.exists("/run/metadata/torcx") and not node.exists("/run/torcx/profile.json")
        node.shutdown()
        node.boot_again(os_version="1688.5.3")
        assert node.run("/run/torcx/bin/docker").stdout == "Docker version 17.06, build torcx-test\n"
