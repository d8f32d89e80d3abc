"""generator: unit text from configuration (pure), the written tree against golden
directories, and ``systemd-analyze verify`` on the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torcx_tectonic import generator
from torcx_tectonic.config import Config
from torcx_tectonic.errors import ConfigError
from torcx_tectonic.flows import all_flows

from .helpers import make_config, tree

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
LIBEXEC = "/usr/libexec/torcx-tectonic"
MARKER = "/run/update_engine_autoupdate_completed"

BOOTSTRAP = ["os-update", "kubelet-version", "docker-version", "addons", "kubelet-env", "finish"]
NEW_OS = ["os-version", "kubelet-version", "docker-version", "addons", "gc", "annotate"]
NEW_KUBELET = ["kubelet-version", "os-version", "docker-version", "addons"]


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


def units(prefix: str, steps: list[str]) -> list[str]:
    return [f"{prefix}-{step}.service" for step in steps]


# --- render: ordering, conditions, commands --------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "steps", "locked"),
    [
        ("torcx-bootstrap", BOOTSTRAP, BOOTSTRAP),
        ("torcx-new-os", NEW_OS, NEW_OS[:-1]),
        ("torcx-new-kubelet", NEW_KUBELET, NEW_KUBELET),
    ],
)
def test_each_step_requires_and_follows_the_previous_one(prefix: str, steps: list[str], locked: list[str]) -> None:
    out = generator.render(make_config())
    names = units(prefix, steps)
    lock = f"torcx-tectonic-lock@{prefix.removeprefix('torcx-')}.service"
    for index, name in enumerate(names):
        text = out.files[name]
        step_requires = [u for u in values(text, "Unit", "Requires") if u != lock]
        step_after = [u for u in values(text, "Unit", "After") if u not in (lock, "network-online.target")]
        expected = [names[index - 1]] if index else []
        assert step_requires == expected, name
        assert step_after == expected, name
        has_lock = lock in values(text, "Unit", "Requires") and lock in values(text, "Unit", "After")
        assert has_lock == (steps[index] in locked), name


def test_every_step_is_a_oneshot_running_its_libexec_script() -> None:
    out = generator.render(make_config())
    commands = [  # flow, step, script, arguments
        ("bootstrap", "os-update", "next-os", " --attempt-update"),
        ("bootstrap", "kubelet-version", "kubelet-version", " --source cluster"),
        ("bootstrap", "docker-version", "docker-version", " --retry"),
        ("bootstrap", "addons", "install-addons", " --retry"),
        ("bootstrap", "kubelet-env", "kubelet-env", ""),
        ("bootstrap", "finish", "finish-bootstrap", ""),
        ("new-os", "os-version", "next-os", ""),
        ("new-os", "kubelet-version", "kubelet-version", " --source kubelet-env"),
        ("new-os", "docker-version", "docker-version", " --retry"),
        ("new-os", "addons", "install-addons", " --retry"),
        ("new-os", "gc", "gc-stores", ""),
        ("new-os", "annotate", "annotate-node", " --retry"),
        ("new-kubelet", "kubelet-version", "kubelet-version", " --source kubelet-env"),
        ("new-kubelet", "os-version", "next-os", ""),
        ("new-kubelet", "docker-version", "docker-version", " --retry"),
        ("new-kubelet", "addons", "install-addons", " --retry"),
    ]
    expected = {f"torcx-{flow}-{step}.service": f"{LIBEXEC}/{script} --flow {flow} --step {step}{args}"
                for flow, step, script, args in commands}
    expected["torcx-new-kubelet-recheck.service"] = (
        f"{LIBEXEC}/recheck-kubelet --flow new-kubelet --step recheck --anchor torcx-new-kubelet-addons.service")
    services = {name: text for name, text in out.files.items() if name.endswith(".service")}
    assert {name: values(text, "Service", "ExecStart") for name, text in services.items()} == {
        name: [command] for name, command in expected.items()
    }
    for name, text in services.items():
        assert values(text, "Service", "Type") == ["oneshot"], name
        assert values(text, "Service", "SyslogIdentifier") == [name.removesuffix(".service")], name
        assert text.startswith(generator.HEADER)


def test_every_libexec_script_a_unit_runs_exists() -> None:
    out = generator.render(make_config())
    scripts = {
        values(text, "Service", "ExecStart")[0].split()[0].rsplit("/", 1)[1]
        for name, text in out.files.items()
        if name.endswith(".service")
    }
    assert scripts <= {p.name for p in (ROOT / "libexec").iterdir()}


def test_conditions() -> None:
    out = generator.render(make_config({"kubernetes.kubelet_env": "/etc/k8s/kubelet.env"}))
    conditions = {name: values(text, "Unit", "ConditionPathExists") for name, text in out.files.items()}
    for name in units("torcx-bootstrap", BOOTSTRAP[:-1]):
        assert conditions[name] == ["!/etc/k8s/kubelet.env"], name
    assert conditions["torcx-bootstrap-finish.service"] == ["/run/torcx-tectonic/bootstrap/finish-pending"]
    for name in units("torcx-new-os", NEW_OS):
        assert conditions[name] == ([MARKER] if name.endswith(("-gc.service", "-annotate.service")) else []), name
    for name in units("torcx-new-kubelet", NEW_KUBELET):
        assert conditions[name] == [], name


def test_bootstrap_steps_come_before_the_target_and_others_do_not() -> None:
    out = generator.render(make_config())
    for name, text in out.files.items():
        expected = ["torcx-bootstrap.target"] if name.startswith("torcx-bootstrap-") else []
        assert values(text, "Unit", "Before") == expected, name


def test_network_steps_want_the_network() -> None:
    out = generator.render(make_config())
    online = {name for name, text in out.files.items() if "network-online.target" in values(text, "Unit", "Wants")}
    assert online == {
        "torcx-bootstrap-kubelet-version.service",
        "torcx-bootstrap-docker-version.service",
        "torcx-bootstrap-addons.service",
        "torcx-new-os-kubelet-version.service",
        "torcx-new-os-docker-version.service",
        "torcx-new-os-addons.service",
        "torcx-new-os-annotate.service",
        "torcx-new-kubelet-kubelet-version.service",
        "torcx-new-kubelet-docker-version.service",
        "torcx-new-kubelet-addons.service",
    }
    for name in online:
        assert "network-online.target" in values(out.files[name], "Unit", "After"), name


def test_links_make_the_targets_require_their_steps() -> None:
    out = generator.render(make_config())
    expected = {f"torcx-bootstrap.target.requires/{u}": f"../{u}" for u in units("torcx-bootstrap", BOOTSTRAP)}
    expected |= {f"torcx-new-os.target.requires/{u}": f"../{u}" for u in units("torcx-new-os", NEW_OS)}
    expected |= {
        "multi-user.target.wants/torcx-new-os.path": "../torcx-new-os.path",
        "multi-user.target.wants/torcx-new-kubelet.path": "../torcx-new-kubelet.path",
    }
    assert out.links == expected
    assert all(target.removeprefix("../") in out.files for target in out.links.values())


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


def test_upgrade_os_no_only_reads_the_pending_update() -> None:
    out = generator.render(make_config({"bootstrap.upgrade_os": "no"}))
    text = out.files["torcx-bootstrap-os-update.service"]
    assert values(text, "Service", "ExecStart") == [f"{LIBEXEC}/next-os --flow bootstrap --step os-update"]
    assert values(text, "Unit", "Description") == ["torcx-tectonic bootstrap: Read the pending OS update"]
    assert values(text, "Service", "TimeoutStartSec") == [str(int((10 + 60) * 6 * 4 + 300))]
    assert sorted(out.files) == sorted(generator.render(make_config()).files)


def test_skip_torcx_drops_the_docker_steps_and_keeps_the_chain() -> None:
    out = generator.render(make_config({"bootstrap.skip_torcx": "yes"}))
    kept = ["os-update", "kubelet-version", "kubelet-env", "finish"]
    assert sorted(n for n in out.files if n.startswith("torcx-bootstrap-")) == sorted(units("torcx-bootstrap", kept))
    text = out.files["torcx-bootstrap-kubelet-env.service"]
    assert "torcx-bootstrap-kubelet-version.service" in values(text, "Unit", "Requires")
    assert "torcx-bootstrap-kubelet-version.service" in values(text, "Unit", "After")
    assert sorted(n for n in out.links if n.startswith("torcx-bootstrap.target")) == sorted(
        f"torcx-bootstrap.target.requires/{u}" for u in units("torcx-bootstrap", kept)
    )
    # the other flows keep their Docker steps
    assert "torcx-new-os-addons.service" in out.files
    assert "torcx-new-kubelet-addons.service" in out.files


def test_network_steps_retry_inside_the_step_not_through_systemd_restart() -> None:
    # Restart= would re-run only the failed unit after its dependents already failed;
    # the step retries itself (--retry) so the chain waits and continues when it heals.
    out = generator.render(make_config())
    retried = {name for name, text in out.files.items()
               if any(v.endswith(" --retry") for v in values(text, "Service", "ExecStart"))}
    assert retried == {
        f"{p}-{s}.service"
        for p in ("torcx-bootstrap", "torcx-new-os", "torcx-new-kubelet")
        for s in ("docker-version", "addons")
    } | {"torcx-new-os-annotate.service"}
    assert not any(values(text, "Service", "Restart") for text in out.files.values())


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
        ({}, "torcx-new-os-gc.service", generator.LOCAL_STEP_TIMEOUT_SECS),
    ],
)
def test_timeouts_follow_the_configured_waits(settings: dict[str, str], unit: str, expected: int) -> None:
    out = generator.render(make_config(settings))
    assert values(out.files[unit], "Service", "TimeoutStartSec") == [str(expected)]


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
    # a kubelet.env change during the run only merges into the running job
    out = generator.render(make_config())
    anchor = out.files["torcx-new-kubelet-addons.service"]
    assert values(anchor, "Unit", "OnSuccess") == ["torcx-new-kubelet-recheck.service"]
    assert sum(bool(values(text, "Unit", "OnSuccess")) for text in out.files.values()) == 1


def test_render_only_the_given_flows() -> None:
    config = make_config()
    out = generator.render(config, flows=all_flows(config)[2:])
    assert sorted(out.files) == sorted([*units("torcx-new-kubelet", NEW_KUBELET), "torcx-new-kubelet.path",
                                        "torcx-new-kubelet-recheck.service"])


# --- write and main -------------------------------------------------------------------------------


def test_write_refuses_to_overwrite_a_unit(tmp_path: Path) -> None:
    out = generator.Output(files={"a.service": "[Unit]\n"})
    generator.write(out, tmp_path)
    with pytest.raises(FileExistsError, match=f"{tmp_path / 'a.service'}: unit already exists"):
        generator.write(out, tmp_path)


def test_write_tolerates_a_link_that_already_points_right(tmp_path: Path) -> None:
    generator.write(generator.Output(links={"x.target.wants/a.service": "../a.service"}), tmp_path)
    generator.write(generator.Output(links={"x.target.wants/a.service": "../a.service"}), tmp_path)
    assert os.readlink(tmp_path / "x.target.wants" / "a.service") == "../a.service"
    with pytest.raises(FileExistsError):
        generator.write(generator.Output(links={"x.target.wants/a.service": "../b.service"}), tmp_path)


@pytest.mark.parametrize("argv", [[], ["a", "b"], ["a", "b", "c", "d"]])
def test_output_dir_wants_one_or_three_directories(argv: list[str]) -> None:
    with pytest.raises(SystemExit, match=f"usage: torcx-tectonic-generator .*got {len(argv)} arguments"):
        generator.output_dir(argv)


def test_output_dir_is_the_normal_directory() -> None:
    assert generator.output_dir(["/run/n", "/run/e", "/run/l"]) == Path("/run/n")
    assert generator.output_dir(["/tmp/x"]) == Path("/tmp/x")


def test_main_uses_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torcx_tectonic.config.load", lambda: make_config({"bootstrap.skip_torcx": "yes"}))
    assert generator.main([str(tmp_path), "early", "late"]) == 0
    assert not (tmp_path / "torcx-bootstrap-addons.service").exists()
    assert (tmp_path / "torcx-bootstrap-kubelet-env.service").exists()


def test_main_with_a_bad_configuration_logs_and_uses_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad() -> Config:
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


def test_main_never_fails_even_when_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, int]] = []
    monkeypatch.setattr("torcx_tectonic.config.load", make_config)
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
    assert (tmp_path / "torcx-new-os.target.requires" / "torcx-new-os-gc.service").is_symlink()


# --- golden trees -----------------------------------------------------------------------------------

GOLDEN_CASES: dict[str, dict[str, str]] = {
    "default": {},
    "upgrade-os-no": {"bootstrap.upgrade_os": "no"},
    "skip-torcx": {"bootstrap.skip_torcx": "yes"},
    "retry": {"units.retry_delay": "7.5", "units.retry_attempts": "2", "network.retries": "1"},
    "custom-paths": {"kubernetes.kubelet_env": "/etc/k8s/kubelet.env", "kubernetes.label_timeout": "600"},
}


def golden_config(case: str) -> Config:
    sources = (Path("/etc/torcx-tectonic/conf.d/50-site.conf"),) if case == "custom-paths" else ()
    return make_config(GOLDEN_CASES[case], sources=sources)


def _regenerate(case: str) -> None:
    """UPDATE_GOLDEN=1 rewrites tests/unit/golden/<case>/ from the current generator."""
    target = GOLDEN / case
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    generator.write(generator.render(golden_config(case)), target)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_written_tree_matches_the_golden_directory(case: str, tmp_path: Path) -> None:
    if os.environ.get("UPDATE_GOLDEN") == "1":
        _regenerate(case)
    generator.write(generator.render(golden_config(case)), tmp_path)
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
    monkeypatch.setattr(generator, "LIBEXEC_DIR", libexec)
    generator.write(generator.render(config), unit_dir)
    for static in (ROOT / "units").iterdir():
        (unit_dir / static.name).write_text(static.read_text().replace(LIBEXEC, str(libexec)))
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
