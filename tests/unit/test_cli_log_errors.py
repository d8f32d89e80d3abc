"""cli.run_step (errors become one line, a failed record and exit 1), log, errors."""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from torcx_tectonic import cli, errors
from torcx_tectonic import log as logsetup
from torcx_tectonic.config import Config
from torcx_tectonic.errors import ConfigError, InputError, TorcxTectonicError
from torcx_tectonic.facts import Facts
from torcx_tectonic.steps import Context

from .helpers import make_config


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(cli, "Facts", lambda flow: Facts(flow, root=tmp_path))
    monkeypatch.setattr("torcx_tectonic.config.load", make_config)
    monkeypatch.delenv("SYSTEMD_LOG_LEVEL", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    yield tmp_path
    logging.getLogger().handlers[:] = []


def _record(root: Path, flow: str, script: str) -> dict[str, Any]:
    return dict(json.loads((root / flow / f"{script}.json").read_text()))


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source")


def test_success_records_the_facts_and_exits_0(state: Path) -> None:
    seen: list[tuple[Config, str]] = []

    def step(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
        seen.append((ctx.config, args.source))
        return {"kube_version": "v1.8.4+coreos.0"}

    with pytest.raises(SystemExit) as exited:
        cli.run_step(
            "kubelet-version",
            step,
            ["--flow", "new-os", "--step", "kubelet-version", "--source", "x"],
            extra=_source_argument,
        )
    assert exited.value.code == 0
    assert seen == [(make_config(), "x")]
    record = _record(state, "new-os", "kubelet-version")
    assert (record["result"], record["kube_version"], record["step"]) == ("ok", "v1.8.4+coreos.0", "kubelet-version")


def test_known_error_is_one_line_a_failed_record_and_exit_1(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def step(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
        raise InputError("/etc/kubernetes/kubelet.env:3: expected KEY=value", hint="fix the file")

    with pytest.raises(SystemExit) as exited:
        cli.run_step("kubelet-env", step, ["--flow", "bootstrap"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "ERROR: bootstrap/kubelet-env failed: /etc/kubernetes/kubelet.env:3: expected KEY=value (fix the file)\n"
    )
    record = _record(state, "bootstrap", "kubelet-env")
    assert record["result"] == "failed"
    assert record["error"] == "/etc/kubernetes/kubelet.env:3: expected KEY=value (fix the file)"


def test_bad_configuration_fails_the_step(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bad() -> Config:
        raise ConfigError("/etc/torcx-tectonic/torcx-tectonic.conf:2: unknown key 'x' in [torcx]")

    monkeypatch.setattr("torcx_tectonic.config.load", bad)
    with pytest.raises(SystemExit) as exited:
        cli.run_step("gc-stores", lambda ctx, args: {}, ["--flow", "new-os", "--step", "gc"])
    assert exited.value.code == 1
    assert "unknown key 'x'" in _record(state, "new-os", "gc-stores")["error"]


def test_debug_level_keeps_the_traceback(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "debug")

    def step(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
        raise TorcxTectonicError("boom")

    with pytest.raises(TorcxTectonicError, match="boom"):
        cli.run_step("gc-stores", step, ["--flow", "new-os"])
    assert _record(state, "new-os", "gc-stores")["result"] == "failed"


def test_a_bug_is_not_recorded_as_success(state: Path) -> None:
    def step(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        cli.run_step("gc-stores", step, ["--flow", "new-os"])
    assert not (state / "new-os" / "gc-stores.json").exists()


def test_flow_argument_is_required(state: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.run_step("gc-stores", lambda ctx, args: {}, [])
    assert exited.value.code == 2
    assert not any(state.iterdir())


# --- log ----------------------------------------------------------------------------------


def test_journal_lines_carry_the_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "debug")
    try:
        logsetup.setup()
        logger = logging.getLogger("torcx-tectonic.test")
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        logger.error("e")
    finally:
        logging.getLogger().handlers[:] = []
    assert stream.getvalue() == "<7>d\n<6>i\n<4>w\n<3>e\n"


def test_plain_lines_by_hand_and_the_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "warning")
    try:
        logsetup.setup()
        logging.getLogger("t").info("hidden")
        logging.getLogger("t").warning("shown")
    finally:
        logging.getLogger().handlers[:] = []
    assert stream.getvalue() == "WARNING: shown\n"


def test_kmsg_falls_back_to_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_kmsg(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("/dev/kmsg")

    monkeypatch.setattr(logsetup, "open", no_kmsg, raising=False)
    logsetup.kmsg("bad configuration", priority=3)
    assert capsys.readouterr().err == "torcx-tectonic-generator: bad configuration\n"


def test_kmsg_writes_a_priority_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "kmsg"
    opened: list[str] = []

    def fake_open(path: str, mode: str) -> Any:
        opened.append(path)
        return target.open(mode)

    monkeypatch.setattr(logsetup, "open", fake_open, raising=False)
    logsetup.kmsg("hello", priority=4)
    assert opened == ["/dev/kmsg"]
    assert target.read_text() == "<4>torcx-tectonic-generator: hello\n"


# --- errors ---------------------------------------------------------------------------------


def test_error_hint_is_appended() -> None:
    assert str(TorcxTectonicError("what failed")) == "what failed"
    assert str(InputError("what failed", hint="how to fix")) == "what failed (how to fix)"


@pytest.mark.parametrize("kind", [errors.ConfigError, errors.InputError, errors.VerificationError, errors.NetworkError])
def test_every_error_kind_is_a_known_failure(kind: type[TorcxTectonicError]) -> None:
    assert issubclass(kind, TorcxTectonicError)


def _flaky(failures: list[TorcxTectonicError]) -> Any:
    calls: list[int] = []

    def step(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return {"attempts": len(calls)}

    return step


def _ctx(tmp_path: Path, **settings: str) -> Context:
    return Context(make_config(settings), Facts("bootstrap", tmp_path))


def test_retry_tries_again_with_doubling_pauses_until_it_works(tmp_path: Path) -> None:
    pauses: list[float] = []
    step = _flaky([InputError("ConfigMap not fixed yet"), InputError("still not")])
    args = argparse.Namespace(flow="bootstrap", step="docker-version", retry=True)
    record = cli.attempt(step, _ctx(tmp_path, **{"units.retry_delay": "3", "units.retry_attempts": "4"}), args,
                         sleep=pauses.append)
    assert record == {"attempts": 3}
    assert pauses == [3.0, 6.0]


def test_retry_gives_up_after_the_configured_attempts(tmp_path: Path) -> None:
    pauses: list[float] = []
    step = _flaky([InputError(f"failure {n}") for n in range(5)])
    args = argparse.Namespace(flow="bootstrap", step="docker-version", retry=True)
    with pytest.raises(InputError, match="failure 2"):
        cli.attempt(step, _ctx(tmp_path, **{"units.retry_delay": "1", "units.retry_attempts": "3"}), args,
                    sleep=pauses.append)
    assert pauses == [1.0, 2.0]


def test_without_retry_a_step_runs_once(tmp_path: Path) -> None:
    pauses: list[float] = []
    args = argparse.Namespace(flow="bootstrap", step="kubelet-env", retry=False)
    with pytest.raises(InputError, match="once"):
        cli.attempt(_flaky([InputError("once")]), _ctx(tmp_path), args, sleep=pauses.append)
    assert pauses == []


def test_configuration_errors_are_not_retried(tmp_path: Path) -> None:
    pauses: list[float] = []
    args = argparse.Namespace(flow="bootstrap", step="docker-version", retry=True)
    with pytest.raises(ConfigError):
        cli.attempt(_flaky([ConfigError("bad file")]), _ctx(tmp_path), args, sleep=pauses.append)
    assert pauses == []


def test_pauses_are_capped() -> None:
    from torcx_tectonic.config import MAX_RETRY_DELAY_SECS, retry_delays

    units = make_config({"units.retry_delay": "200", "units.retry_attempts": "5"}).units
    assert retry_delays(units) == [200.0, 400.0, MAX_RETRY_DELAY_SECS, MAX_RETRY_DELAY_SECS]
