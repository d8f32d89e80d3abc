"""generator: unit text from the flow table (pure), the written tree against golden
directories, and ``systemd-analyze verify`` on the result. The tests iterate the
table; where one names a step, it states a rule of the domain about that step."""

from __future__ import annotations

import ast
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from torcx_tectonic import config, flows, generator
from torcx_tectonic import directives as unit_directives
from torcx_tectonic.config import Config
from torcx_tectonic.errors import ConfigError
from torcx_tectonic.flows import Flow, Step, all_flows, timeout_secs
from torcx_tectonic.steps.runner import step_function

from .helpers import make_config, tree

ROOT = Path(__file__).resolve().parents[2]
needs_systemd_analyze_security = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
GOLDEN = Path(__file__).resolve().parent / "golden"
LIBEXEC = "/usr/libexec/torcx-tectonic"
MARKER = "/run/update_engine_autoupdate_completed"


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order, without comments."""
    found, section = [], ""
    for line in text.splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key, value))
    return found


def values(text: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in directives(text) if s == section and k == key]


def every_step(config: Config) -> list[tuple[Flow, Step]]:
    return [(flow, step) for flow in all_flows(config) for step in (*flow.steps, *flow.followers)]


def the(config: Config, flow: str, step: str) -> tuple[Flow, Step]:
    found = flows.find_step(config, flow, step)
    assert found is not None, f"{flow}/{step} is not in the flow table"
    return found


# --- the table itself -----------------------------------------------------------------------------

def test_every_entry_point_is_a_libexec_script_and_a_function() -> None:
    scripts = {p.name for p in (ROOT / "libexec").iterdir()}
    for entry in flows.ENTRY_POINTS:
        assert entry in scripts, entry
        assert callable(step_function(entry)), entry
        assert f'run("{entry}")' in (ROOT / "libexec" / entry).read_text(), entry


def test_every_flow_begins_and_ends_one_run_and_names_steps_once() -> None:
    for flow in all_flows(make_config()):
        names = [s.name for s in (*flow.steps, *flow.followers)]
        assert len(names) == len(set(names)), flow.name
        assert flow.begins_run(flow.steps[0]) and flow.ends_run(flow.steps[-1])
        assert not any(flow.follows_run(s) for s in flow.steps)


def test_the_generator_knows_no_flow_or_step_by_name() -> None:
    config = make_config()
    names = {f.name for f in all_flows(config)} | {s.name for _, s in every_step(config)}
    literals = {node.value for node in ast.walk(ast.parse((ROOT / "torcx_tectonic/generator.py").read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not names & literals


# --- render: ordering, conditions, commands --------------------------------------------------

def test_each_step_requires_and_follows_the_previous_one_and_the_lock_when_locked() -> None:
    config = make_config()
    out = generator.render(config)
    for flow in all_flows(config):
        for index, step in enumerate(flow.steps):
            text = out.files[flow.unit(step)]
            expected = [flow.unit(flow.steps[index - 1])] if index else []
            requires = [u for u in values(text, "Unit", "Requires") if u != flow.lock_unit]
            declared = (flow.lock_unit, "network-online.target", *flow.after, *(unit for unit, _ in step.after))
            after = [u for u in values(text, "Unit", "After") if u not in declared]
            assert (requires, after) == (expected, expected), flow.unit(step)
            locked = flow.lock_unit in values(text, "Unit", "Requires") and flow.lock_unit in values(text, "Unit",
                                                                                                       "After")
            assert locked == step.locked, flow.unit(step)


@pytest.mark.parametrize("upgrade_os", ["yes", "no"])
def test_the_os_update_step_starts_after_update_engine_without_pulling_it_in(upgrade_os: str) -> None:
    config = make_config({"bootstrap.upgrade_os": upgrade_os})
    text = generator.render(config).files["torcx-bootstrap-os-update.service"]
    assert "update-engine.service" in values(text, "Unit", "After")
    for pulling in ("Wants", "Requires", "BindsTo", "Requisite"):
        assert "update-engine.service" not in values(text, "Unit", pulling)


def test_the_annotation_waits_for_the_operator_without_holding_the_lock() -> None:
    _, annotate = the(make_config(), "new-os", "annotate")
    assert annotate.locked is False  # it may wait an hour for the label; it takes the lock to write only


def test_every_step_is_a_oneshot_running_its_libexec_script() -> None:
    config = make_config()
    out = generator.render(config)
    for flow, step in every_step(config):
        text = out.files[flow.unit(step)]
        assert values(text, "Service", "ExecStart") == [f"{LIBEXEC}/{step.entry} --flow {flow.name} "
                                                        f"--step {step.name}"]
        assert values(text, "Service", "Type") == ["oneshot"]
        assert values(text, "Service", "SyslogIdentifier") == [flow.unit(step).removesuffix(".service")]
        assert text.startswith(generator.HEADER)
    services = {n for n in out.files if n.endswith(".service") and "/" not in n}
    retry_units = {flow.retry_unit for flow in all_flows(config) if flow.backoff}
    assert services == {flow.unit(step) for flow, step in every_step(config)} | {
        generator.LOCK_TEMPLATE, generator.METRICS_UNIT} | retry_units


def test_conditions_come_from_the_table() -> None:
    config = make_config({"kubernetes.kubelet_env": "/etc/k8s/kubelet.env"})
    out = generator.render(config)
    for flow, step in every_step(config):
        found = [f"{k}={v}" for s, k, v in directives(out.files[flow.unit(step)]) if k.startswith("Condition")]
        assert found == list(step.conditions), flow.unit(step)


def test_bootstrap_skips_once_kubelet_env_exists_and_finishes_only_a_run_of_this_boot() -> None:
    config = make_config({"kubernetes.kubelet_env": "/etc/k8s/kubelet.env"})
    bootstrap = all_flows(config)[0]
    for step in bootstrap.steps[:-1]:
        assert step.conditions == ("ConditionPathExists=!/etc/k8s/kubelet.env",), step.name
    assert bootstrap.steps[-1].conditions == ("ConditionPathIsDirectory=/run/torcx-tectonic/bootstrap",)
    assert bootstrap.lock_conditions == ("ConditionPathExists=!/etc/k8s/kubelet.env",)
    out = generator.render(config)
    dropin = out.files["torcx-tectonic-lock@bootstrap.service.d/50-skip-with-steps.conf"]
    assert values(dropin, "Unit", "ConditionPathExists") == ["!/etc/k8s/kubelet.env"]


def test_gc_and_annotation_only_while_an_update_waits() -> None:
    config = make_config()
    for name in ("gc", "annotate"):
        assert the(config, "new-os", name)[1].conditions == (f"ConditionPathExists={MARKER}",)


def test_steps_of_a_target_come_before_it_only_when_the_flow_says_so() -> None:
    config = make_config()
    out = generator.render(config)
    for flow, step in every_step(config):
        before = values(out.files[flow.unit(step)], "Unit", "Before")
        expected = ([flow.target_unit] if flow.target and flow.before_target else []) + (
            [" ".join(flow.before)] if flow.before else [])
        assert before == expected, flow.unit(step)


def test_docker_data_is_reset_before_docker_starts() -> None:
    config = make_config()
    flow, step = the(config, "docker-reset", "data")
    out = generator.render(config)
    text = out.files[flow.unit(step)]
    assert values(text, "Unit", "Before") == ["docker.service containerd.service docker.socket"]
    assert values(text, "Unit", "RequiresMountsFor") == ["/var/lib/docker"]
    assert values(text, "Unit", "ConditionPathExists") == ["/var/lib/torcx-tectonic/docker-reset-needed"]
    for unit in ("docker.service", "containerd.service"):
        assert out.links[f"{unit}.wants/{flow.unit(step)}"] == f"../{flow.unit(step)}"


def test_network_steps_want_the_network() -> None:
    config = make_config()
    out = generator.render(config)
    for flow, step in every_step(config):
        text = out.files[flow.unit(step)]
        assert ("network-online.target" in values(text, "Unit", "Wants")) == step.network, flow.unit(step)
        assert ("network-online.target" in values(text, "Unit", "After")) == step.network, flow.unit(step)
    # the cluster's version comes over the network in bootstrap, from kubelet.env afterwards
    assert the(config, "bootstrap", "kubelet-version")[1].network
    assert not the(config, "new-os", "kubelet-version")[1].network


def test_links_make_the_targets_require_their_steps() -> None:
    config = make_config()
    out = generator.render(config)
    expected: dict[str, str] = {}
    for flow in all_flows(config):
        if flow.target:
            kind = "wants" if flow.backoff else "requires"
            expected |= {f"{flow.target_unit}.{kind}/{flow.unit(s)}": f"../{flow.unit(s)}" for s in flow.steps}
        if flow.trigger:
            expected[f"multi-user.target.wants/{flow.unit_prefix}.path"] = f"../{flow.unit_prefix}.path"
        for unit in flow.wanted_by:
            expected |= {f"{unit}.wants/{flow.unit(s)}": f"../{flow.unit(s)}" for s in flow.steps}
    for unit in (generator.METRICS_UNIT, generator.METRICS_PATH):
        expected[f"multi-user.target.wants/{unit}"] = f"../{unit}"
    assert out.links == expected
    assert all(target.removeprefix("../") in out.files for target in out.links.values())
    assert {"torcx-bootstrap.target.requires/torcx-bootstrap-finish.service",
            "multi-user.target.wants/torcx-new-kubelet.path"} <= set(out.links)


def test_path_units() -> None:
    out = generator.render(make_config({"kubernetes.kubelet_env": "/etc/k8s/kubelet.env"}))
    new_os = out.files["torcx-new-os.path"]
    assert values(new_os, "Path", "PathExists") == [MARKER]
    assert values(new_os, "Path", "Unit") == ["torcx-new-os.target"]
    new_kubelet = out.files["torcx-new-kubelet.path"]
    assert values(new_kubelet, "Path", "PathChanged") == ["/etc/k8s/kubelet.env"]
    assert values(new_kubelet, "Path", "Unit") == ["torcx-new-kubelet-addons.service"]
    for text in (new_os, new_kubelet):
        # only a bootstrapped node follows changes ...
        assert values(text, "Unit", "ConditionPathExists") == ["/etc/k8s/kubelet.env"]
        # ... and without ordering after the bootstrap target, which made the boot
        # transaction lose the bootstrap's last jobs (test_bootstrap: enabled target).
        assert values(text, "Unit", "After") == []
    assert flows.path_units(make_config()) == ("torcx-new-os.path", "torcx-new-kubelet.path")


def test_upgrade_os_no_only_reads_the_pending_update() -> None:
    config = make_config({"bootstrap.upgrade_os": "no"})
    _, step = the(config, "bootstrap", "os-update")
    assert step.params == {"attempt_update": False, "engine_optional": True}
    assert step.description == "Read the pending OS update"
    out = generator.render(config)
    assert values(out.files["torcx-bootstrap-os-update.service"], "Service", "TimeoutStartSec") == [
        str(int((10 + 60) * 6 * 4 + 300))]
    assert sorted(out.files) == sorted(generator.render(make_config()).files)
    assert the(make_config(), "bootstrap", "os-update")[1].params == {"attempt_update": True,
                                                                       "engine_optional": False}


def test_skip_torcx_drops_the_docker_steps_and_keeps_the_chain() -> None:
    config = make_config({"bootstrap.skip_torcx": "yes"})
    bootstrap = all_flows(config)[0]
    assert [s.entry for s in bootstrap.steps] == ["next-os", "kubelet-version", "kubelet-env", "finish-bootstrap"]
    out = generator.render(config)
    text = out.files["torcx-bootstrap-kubelet-env.service"]
    assert "torcx-bootstrap-kubelet-version.service" in values(text, "Unit", "Requires")
    # the other flows keep their Docker steps
    assert "torcx-new-os-addons.service" in out.files
    assert "torcx-new-kubelet-addons.service" in out.files


def test_network_steps_retry_inside_the_step_not_through_systemd_restart() -> None:
    # Restart= would re-run only the failed unit after its dependents already failed;
    # the step retries itself so the chain waits and continues when it heals.
    config = make_config()
    retried = {f"{flow.name}/{step.entry}" for flow, step in every_step(config) if step.retry}
    assert retried == {f"{f}/{e}" for f in ("bootstrap", "new-os", "new-kubelet")
                       for e in ("docker-version", "install-addons")} | {"new-os/annotate-node"}
    assert not any(values(text, "Service", "Restart") for text in generator.render(config).files.values())


@pytest.mark.parametrize(
    ("settings", "unit", "expected"),
    [
        ({}, "torcx-bootstrap-os-update.service", 1800 * 3 + 300),
        (
            {"bootstrap.os_update_timeout": "600", "bootstrap.os_update_attempts": "1"},
            "torcx-bootstrap-os-update.service",
            600 + 300,
        ),
        # five attempts, pauses of 30+60+120+240 s between them
        ({}, "torcx-new-os-annotate.service", (3600 + (10 + 60) * 6) * 5 + 450 + 300),
        (
            {"network.retries": "0", "network.connect_timeout": "1", "network.read_timeout": "2"},
            "torcx-new-os-docker-version.service",
            3 * 4 * 5 + 450 + 300,
        ),
        (
            {"units.retry_attempts": "1"},
            "torcx-new-os-docker-version.service",
            (10 + 60) * 6 * 4 + 300,
        ),
        ({}, "torcx-new-os-gc.service", flows.LOCAL_STEP_TIMEOUT_SECS),
    ],
)
def test_timeouts_follow_the_configured_waits(settings: dict[str, str], unit: str, expected: int) -> None:
    config = make_config(settings)
    out = generator.render(config)
    assert values(out.files[unit], "Service", "TimeoutStartSec") == [str(expected)]
    assert all(values(out.files[f.unit(s)], "Service", "TimeoutStartSec") == [str(timeout_secs(s, config))]
               for f, s in every_step(config))


def test_source_path_is_the_last_configuration_file() -> None:
    sources = (Path("/etc/torcx-tectonic/torcx-tectonic.conf"), Path("/etc/torcx-tectonic/conf.d/50-site.conf"))
    out = generator.render(make_config(sources=sources))
    assert {v for text in out.files.values() for v in values(text, "Unit", "SourcePath")} == {
        "/etc/torcx-tectonic/conf.d/50-site.conf"
    }
    default = generator.render(make_config())
    assert {v for text in default.files.values() for v in values(text, "Unit", "SourcePath")} == {
        "/etc/torcx-tectonic/torcx-tectonic.conf"
    }


def test_new_kubelet_looks_again_after_each_run() -> None:
    # a kubelet.env change during the run only merges into the running job; the
    # recheck is pulled in with the last step and ordered after it (no OnSuccess=,
    # which systemd before 249 does not know)
    config = make_config()
    out = generator.render(config)
    flow = all_flows(config)[2]
    last, recheck = flow.unit(flow.steps[-1]), flow.unit(flow.followers[0])
    assert recheck in values(out.files[last], "Unit", "Wants")
    assert values(out.files[recheck], "Unit", "After") == [last]
    assert values(out.files[recheck], "Unit", "Requires") == []
    assert flow.followers[0].params == {"anchor": last}
    assert sum(recheck in values(text, "Unit", "Wants") for text in out.files.values()) == 1


# --- least privilege ----------------------------------------------------------------------------------

def test_every_step_writes_only_what_the_table_declares() -> None:
    config = make_config({"kubernetes.kubelet_env": "/etc/k8s/kubelet.env", "metrics.textfile_dir": "/srv/prom"})
    out = generator.render(config, version=252)
    for flow, step in every_step(config):
        text = out.files[flow.unit(step)]
        assert values(text, "Service", "ProtectSystem") == ["strict"]
        assert values(text, "Service", "RuntimeDirectory") == ["torcx-tectonic"]  # records, lock
        assert values(text, "Service", "StateDirectory")[0].split()[0] == "torcx-tectonic"  # runs
        assert "-/srv/prom" not in " ".join(values(text, "Service", "ReadWritePaths"))  # the metrics unit's
        families = values(text, "Service", "RestrictAddressFamilies")
        assert families == (["AF_UNIX AF_INET AF_INET6"] if step.network else ["AF_UNIX"])
        assert values(text, "Service", "IPAddressDeny") == ([] if step.network else ["any"])
        assert values(text, "Service", "CapabilityBoundingSet") == [" ".join(step.capabilities)]

    def writable(unit: str) -> tuple[list[str], list[str], list[str], list[str]]:
        text = out.files[unit]
        return (values(text, "Service", "StateDirectory"), values(text, "Service", "CacheDirectory"),
                values(text, "Service", "ConfigurationDirectory"), values(text, "Service", "ReadWritePaths"))

    assert writable("torcx-new-os-addons.service") == (["torcx-tectonic torcx"], [], ["torcx"], ["/etc/torcx"])
    assert writable("torcx-new-os-docker-version.service") == (["torcx-tectonic"], ["torcx-tectonic"], [], [])
    assert writable("torcx-bootstrap-kubelet-env.service") == (["torcx-tectonic"], [], ["k8s"], ["/etc/k8s"])
    assert writable("torcx-new-os-gc.service") == (["torcx-tectonic torcx"], [], [], [])
    assert writable("torcx-bootstrap-finish.service") == (["torcx-tectonic"], [], [], [])
    assert writable("torcx-docker-reset-data.service") == (["torcx-tectonic"], [], [], ["-/var/lib"])


def test_only_the_steps_that_ask_the_service_manager_keep_a_capability() -> None:
    config = make_config()
    privileged = {f"{f.name}/{s.name}": s.capabilities for f, s in every_step(config) if s.capabilities}
    assert privileged == {"bootstrap/kubelet-env": ("CAP_SYS_ADMIN",), "bootstrap/finish": ("CAP_SYS_ADMIN",),
                          "new-kubelet/recheck": ("CAP_SYS_ADMIN",),
                          "docker-reset/data": ("CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER")}


@pytest.mark.parametrize("version", [233, 235, 245, 249, 252, 256])
def test_every_directive_is_one_the_systemd_it_is_written_for_understands(version: int) -> None:
    for case in sorted(GOLDEN_CASES):
        for name, text in generator.render(golden_config(case), version=version).files.items():
            for line in text.splitlines():
                if line and not line.startswith(("#", "[")):
                    since = unit_directives.introduced(line)
                    assert since is not None, f"{name}: {line!r} is not in directives.INTRODUCED"
                    assert since <= version, f"{name}: {line!r} needs systemd {since}"


def test_the_oldest_supported_systemd_still_gets_every_unit_and_its_meaning() -> None:
    old, new = generator.render(make_config(), version=233), generator.render(make_config(), version=252)
    assert sorted(old.files) == sorted(new.files) and old.links == new.links
    for name, text in old.files.items():
        kept = [(s, k, v) for s, k, v in directives(new.files[name]) if s != "Service" or k in (
            "Type", "ExecStart", "SyslogIdentifier", "TimeoutStartSec")]
        assert [d for d in directives(text) if d in kept] == kept, name
    assert "ProtectSystem" not in old.files["torcx-new-os-addons.service"]  # no StateDirectory= to keep it usable


def test_shipped_units_use_only_known_directives_of_the_oldest_systemd() -> None:
    for unit in (ROOT / "units").iterdir():
        for line in unit.read_text().splitlines():
            if line and not line.startswith(("#", "[")):
                since = unit_directives.introduced(line) or 10**6
                assert since <= unit_directives.MIN_SYSTEMD, f"{unit.name}: {line}"


def test_the_running_systemd_version_is_read_from_its_shared_library(tmp_path: Path) -> None:
    assert unit_directives.running_version(str(tmp_path)) == unit_directives.MIN_SYSTEMD  # nothing found: the oldest
    library = tmp_path / "usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so"
    library.parent.mkdir(parents=True)
    library.write_text("")
    assert unit_directives.running_version(str(tmp_path)) == 252
    (tmp_path / "usr/lib/systemd").mkdir()
    (tmp_path / "usr/lib/systemd/libsystemd-shared-255.3-1.fc40.so").write_text("")
    assert unit_directives.running_version(str(tmp_path)) == 255


@needs_systemd_analyze_security
@pytest.mark.parametrize("case", ["default", "sysext"])
def test_systemd_analyze_security_scores_every_unit_low(case: str, tmp_path: Path) -> None:
    generator.write(generator.render(golden_config(case), version=252), str(tmp_path))
    scores = {}
    for unit in sorted(tmp_path.glob("*.service")):
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                                capture_output=True, text=True, timeout=60, check=False)
        last = result.stdout.strip().splitlines()[-1]
        scores[unit.name] = float(last.split("level for ")[1].split(": ")[1].split()[0])
    values_ = sorted(scores.values())
    assert statistics.median(values_) <= 3.0, scores
    assert max(values_) <= 5.0, scores


# --- write and main -------------------------------------------------------------------------------


def output(files: dict[str, str] | None = None, links: dict[str, str] | None = None) -> generator.Output:
    out = generator.Output()
    out.files.update(files or {})
    out.links.update(links or {})
    return out


def test_write_refuses_to_overwrite_a_unit(tmp_path: Path) -> None:
    out = output(files={"a.service": "[Unit]\n"})
    generator.write(out, str(tmp_path))
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'a.service'}: unit already exists"):
        generator.write(out, str(tmp_path))


def test_write_tolerates_a_link_that_already_points_right(tmp_path: Path) -> None:
    generator.write(output(links={"x.target.wants/a.service": "../a.service"}), str(tmp_path))
    generator.write(output(links={"x.target.wants/a.service": "../a.service"}), str(tmp_path))
    assert os.readlink(tmp_path / "x.target.wants" / "a.service") == "../a.service"
    with pytest.raises(FileExistsError):
        generator.write(output(links={"x.target.wants/a.service": "../b.service"}), str(tmp_path))


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "b", "c", "d"]])
def test_output_dir_wants_one_or_three_directories(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=f"usage: torcx-tectonic-generator .*got {len(argv)} arguments"):
        generator.output_dir(argv)


def test_output_dir_is_the_normal_directory() -> None:
    assert generator.output_dir(["/run/n", "/run/e", "/run/l"]) == "/run/n"
    assert generator.output_dir(["/tmp/x"]) == "/tmp/x"


def test_main_uses_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torcx_tectonic.config.load", lambda **_: make_config({"bootstrap.skip_torcx": "yes"}))
    assert generator.main([str(tmp_path), "early", "late"]) == 0
    assert not (tmp_path / "torcx-bootstrap-addons.service").exists()
    assert (tmp_path / "torcx-bootstrap-kubelet-env.service").exists()


def test_main_with_a_bad_configuration_logs_and_uses_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad(**_: object) -> Config:
        raise ConfigError("/etc/torcx-tectonic/torcx-tectonic.conf:3: unknown key 'x' in [torcx]")

    logged: list[tuple[str, int]] = []
    monkeypatch.setattr("torcx_tectonic.config.load", bad)
    monkeypatch.setattr("torcx_tectonic.log.kmsg", lambda message, priority=4: logged.append((message, priority)))
    assert generator.main([str(tmp_path)]) == 0
    assert logged == [
        (
            "/etc/torcx-tectonic/torcx-tectonic.conf:3: unknown key 'x' in [torcx]; generating units "
            "from the defaults, ignoring the configuration",
            4,
        )
    ]
    assert (tmp_path / "torcx-bootstrap-addons.service").exists()


def _configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[tuple[str, int]]:
    """Run the generator's main on a configuration file holding ``text``; what it logged."""
    conf = tmp_path / "torcx-tectonic.conf"
    conf.write_text(text)
    real_load = config.load
    monkeypatch.setattr("torcx_tectonic.config.load", lambda **kw: real_load(conf, tmp_path / "conf.d", **kw))
    logged: list[tuple[str, int]] = []
    monkeypatch.setattr("torcx_tectonic.log.kmsg", lambda message, priority=4: logged.append((message, priority)))
    (tmp_path / "out").mkdir()
    assert generator.main([str(tmp_path / "out")]) == 0
    return logged


def test_a_bad_value_in_what_the_units_are_made_of_makes_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = _configured(tmp_path, monkeypatch, "[bootstrap]\nskip_torcx = yes\n[network]\nproxy = ftp://x\n")
    assert [priority for _, priority in logged] == [4]
    assert f"{tmp_path}/torcx-tectonic.conf:4: [network] proxy = 'ftp://x'" in logged[0][0]
    assert (tmp_path / "out/torcx-bootstrap-addons.service").exists()  # skip_torcx = yes was not used either


def test_a_bad_value_the_units_do_not_use_is_left_to_the_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The generator checks what its units are made of; every step checks every
    # setting before it acts (load() without check=False), and reports this one.
    text = "[bootstrap]\nskip_torcx = yes\n[torcx]\nmanifest_url = ftp://bucket/{{.OSVersion}}\n"
    assert _configured(tmp_path, monkeypatch, text) == []
    assert not (tmp_path / "out/torcx-bootstrap-addons.service").exists()  # the configuration was used
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"torcx-tectonic.conf:4: \[torcx\] manifest_url = "):
        config.load(tmp_path / "torcx-tectonic.conf", tmp_path / "conf.d")


def test_main_never_fails_even_when_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, int]] = []
    monkeypatch.setattr("torcx_tectonic.config.load", lambda **_: make_config())
    monkeypatch.setattr("torcx_tectonic.log.kmsg", lambda message, priority=4: logged.append((message, priority)))
    assert generator.main([str(tmp_path / "missing")]) == 0
    assert len(logged) == 1
    assert logged[0][0].startswith(f"cannot write units to {tmp_path / 'missing'}: ")
    assert logged[0][1] == 3


def test_generator_script_runs_on_the_system_python_without_network_or_dbus_modules(tmp_path: Path) -> None:
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['torcx-tectonic-generator', {str(tmp_path)!r}, 'early', 'late']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'generator' / 'torcx-tectonic-generator')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print(sorted(m for m in ('requests', 'urllib3', 'pystemd', 'yaml', 'gi', 'dbus') if m in sys.modules))\n"
    )
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    result = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "torcx-new-os.path").is_file()
    assert (tmp_path / "torcx-new-os.target.wants" / "torcx-new-os-gc.service").is_symlink()
    assert (tmp_path / "docker.service.wants" / "torcx-docker-reset-data.service").is_symlink()


@pytest.mark.parametrize("configured", ["shipped", "every-key"])
def test_the_generator_imports_nothing_but_what_rendering_needs(tmp_path: Path, configured: str) -> None:
    # It runs at every boot on `python3 -IS` (see the Makefile): the package's own
    # modules, and with a file that sets something iniparse and what it needs, nothing else.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    found = subprocess.run([python, "-I", "-c", "import iniparse, os; print(os.path.dirname(iniparse.__path__[0]))"],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        pytest.skip(f"{python} has no iniparse")
    shipped = config.render_default()
    every_key = "".join(line[1:] + "\n" if line.startswith("#") and " = " in line else line + "\n"
                        for line in shipped.splitlines())
    (tmp_path / "main.conf").write_text(shipped if configured == "shipped" else every_key)
    (tmp_path / "out").mkdir()
    probe = (
        "import sys\n"
        f"sys.path += [{str(ROOT)!r}, {found.stdout.strip()!r}]\n"
        "before = set(sys.modules)\n"
        "from torcx_tectonic import config, generator\n"
        f"loaded = config.load({str(tmp_path / 'main.conf')!r}, {str(tmp_path / 'none.d')!r}, check=False)\n"
        f"generator.write(generator.render(loaded), {str(tmp_path / 'out')!r})\n"
        "assert loaded.last_source() is not None\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run([python, "-I", "-S", "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    ours = {m for m in imported if m.startswith("torcx_tectonic")}
    assert ours == {"torcx_tectonic", *(f"torcx_tectonic.{m}" for m in (
        "config", "directives", "edges", "edges.inputfile", "errors", "flows", "generator", "installdirs", "paths"))}
    others = {m.split(".")[0] for m in imported - ours}
    if configured == "shipped":  # all comments: neither iniparse nor the regular expressions it needs
        assert not others & {"iniparse", "re", "enum"}, sorted(others)
    # never: pathlib, typing, dataclasses, logging, json, socket, urllib, the network or D-Bus libraries
    forbidden = {"pathlib", "typing", "dataclasses", "inspect", "logging", "json", "socket", "urllib", "tempfile",
                 "requests", "urllib3", "yaml", "pystemd", "packaging"}
    assert not others & forbidden, sorted(others & forbidden)
    assert (tmp_path / "out/torcx-bootstrap-finish.service").is_file()


# --- golden trees -----------------------------------------------------------------------------------

#: The golden trees are rendered for Flatcar stable's systemd, whatever systemd runs the tests.
GOLDEN_SYSTEMD = 252
GOLDEN_CASES: dict[str, dict[str, str]] = {
    "default": {},
    "upgrade-os-no": {"bootstrap.upgrade_os": "no"},
    "skip-torcx": {"bootstrap.skip_torcx": "yes"},
    "retry": {"units.retry_delay": "7.5", "units.retry_attempts": "2", "network.retries": "1"},
    "custom-paths": {"kubernetes.kubelet_env": "/etc/k8s/kubelet.env", "kubernetes.label_timeout": "600"},
    "sysext": {"runtime.backend": "sysext",
               "sysext.images_url": "https://mirror.example/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw"},
    "sysext-kubelet": {"runtime.backend": "sysext", "sysext.kubernetes": "yes",
                       "sysext.images_url": "https://mirror.example/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw"},
}


def golden_config(case: str) -> Config:
    sources = (Path("/etc/torcx-tectonic/conf.d/50-site.conf"),) if case == "custom-paths" else ()
    return make_config(GOLDEN_CASES[case], sources=sources)


def _regenerate(case: str) -> None:
    """UPDATE_GOLDEN=1 rewrites tests/unit/golden/<case>/ from the current generator."""
    target = GOLDEN / case
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    generator.write(generator.render(golden_config(case), version=GOLDEN_SYSTEMD), str(target))


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_written_tree_matches_the_golden_directory(case: str, tmp_path: Path) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        _regenerate(case)
    generator.write(generator.render(golden_config(case), version=GOLDEN_SYSTEMD), str(tmp_path))
    expected = GOLDEN / case
    assert expected.is_dir(), f"missing {expected}: run with UPDATE_GOLDEN=1 to create it"
    assert tree(tmp_path) == tree(expected)


# --- systemd-analyze verify -----------------------------------------------------------------------

STUB = "[Unit]\nDescription=stub for systemd-analyze verify\n\n[Service]\nExecStart=/bin/true\n"


def _verify_tree(tmp_path: Path, config: Config, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Generated + static units with the ExecStart scripts pointing at real executables."""
    libexec = tmp_path / "libexec"
    libexec.mkdir()
    for script in (ROOT / "libexec").iterdir():
        stub = libexec / script.name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    monkeypatch.setattr(generator, "LIBEXEC_DIR", str(libexec))
    generator.write(generator.render(config), str(unit_dir))
    for static in (ROOT / "units").iterdir():
        text = static.read_text().replace("@LIBEXECDIR@", str(libexec)).replace("@DOCDIR@", "/usr/share/doc/tt")
        (unit_dir / static.name).write_text(text)
    for stub_name in ("kubelet.service", "docker.service"):
        (unit_dir / stub_name).write_text(STUB)
    names = sorted(p.name for p in unit_dir.iterdir() if p.is_file())
    return unit_dir, names


def _systemd_analyze_verify(unit_dir: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=unit_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"},
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@needs_systemd_analyze
@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_systemd_analyze_verify_accepts_every_unit(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit_dir, names = _verify_tree(tmp_path, golden_config(case), monkeypatch)
    assert "torcx-new-os.path" in names and "torcx-tectonic-lock@.service" in names
    result = _systemd_analyze_verify(unit_dir, names)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the negative control: the same tree with one mistake is not accepted
    unit_dir, names = _verify_tree(tmp_path, make_config(), monkeypatch)
    gc = unit_dir / "torcx-new-os-gc.service"
    gc.write_text(gc.read_text().replace("Requires=torcx-new-os-addons.service", "Requires=torcx-new-os-adons.service"))
    result = _systemd_analyze_verify(unit_dir, names)
    assert result.returncode != 0
    assert "torcx-new-os-adons.service" in result.stderr


def test_a_percent_sign_in_a_configured_path_is_not_a_specifier() -> None:
    config = make_config({"kubernetes.kubelet_env": "/etc/k%n/kubelet.env", "metrics.textfile_dir": "/srv/p%i"})
    out = generator.render(config, version=252)
    assert values(out.files["torcx-bootstrap-os-update.service"], "Unit", "ConditionPathExists") == [
        "!/etc/k%%n/kubelet.env"]
    assert values(out.files["torcx-new-kubelet.path"], "Path", "PathChanged") == ["/etc/k%%n/kubelet.env"]
    kubelet_env = out.files["torcx-bootstrap-kubelet-env.service"]
    assert values(kubelet_env, "Service", "ReadWritePaths") == ["/etc/k%%n"]
    assert values(out.files[generator.METRICS_UNIT], "Service", "ReadWritePaths") == ["-/srv/p%%i"]


def test_the_metrics_are_written_by_a_unit_of_their_own_when_a_run_changes() -> None:
    """No step waits for the status machinery: the writer runs at boot and
    whenever a run record is replaced, and may write the textfile only."""
    out = generator.render(make_config({"metrics.textfile_dir": "/srv/prom"}), version=252)
    writer = out.files[generator.METRICS_UNIT]
    assert values(writer, "Service", "ExecStart") == [f"{LIBEXEC}/write-metrics"]
    assert values(writer, "Service", "ReadWritePaths") == ["-/srv/prom"]
    assert values(writer, "Service", "StateDirectory") == values(writer, "Service", "RuntimeDirectory") == []
    assert values(writer, "Service", "IPAddressDeny") == ["any"]
    assert values(out.files[generator.METRICS_PATH], "Path", "PathChanged") == ["/var/lib/torcx-tectonic/runs"]
    assert {out.links[f"multi-user.target.wants/{u}"] for u in (generator.METRICS_UNIT, generator.METRICS_PATH)} == {
        f"../{generator.METRICS_UNIT}", f"../{generator.METRICS_PATH}"}
    quiet = generator.render(make_config({"metrics.textfile_dir": ""}), version=252)
    assert not {generator.METRICS_UNIT, generator.METRICS_PATH} & set(quiet.files)


def test_a_configured_path_with_a_blank_is_refused_where_it_is_read() -> None:
    with pytest.raises(ConfigError, match="expected an absolute path without spaces"):
        make_config({"kubernetes.kubelet_env": "/etc/my kube/kubelet.env"})


def test_a_configured_proxy_reaches_the_network_steps_only() -> None:
    config = make_config({"network.proxy": "http://proxy.example.com:3128", "network.no_proxy": "10.3.0.1,.local"})
    out = generator.render(config, version=233)
    for flow, step in every_step(config):
        environment = values(out.files[flow.unit(step)], "Service", "Environment")
        assert environment == ([
            "HTTPS_PROXY=http://proxy.example.com:3128 HTTP_PROXY=http://proxy.example.com:3128",
            "NO_PROXY=10.3.0.1,.local"] if step.network else []), flow.unit(step)


def test_every_configurable_backend_is_a_row_of_the_flow_table() -> None:
    """The configuration accepts exactly the backends the flow table declares."""
    assert set(config.BACKENDS) == set(flows.RUNTIME_BACKENDS)
    for name, backend in flows.RUNTIME_BACKENDS.items():
        assert backend.name == name
        assert {backend.choose.entry, backend.install.entry, backend.gc.entry} <= set(flows.ENTRY_POINTS)
