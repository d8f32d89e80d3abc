"""log (journal lines, kmsg for the generator) and errors (one message, an optional hint)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from torcx_tectonic import errors
from torcx_tectonic import log as logsetup
from torcx_tectonic.errors import InputError, TorcxTectonicError


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_journal_lines_carry_the_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "debug")
    logsetup.setup()
    logger = logging.getLogger("torcx-tectonic.test")
    logger.debug("d")
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    assert stream.getvalue() == "<7>d\n<6>i\n<4>w\n<3>e\n<2>c\n"


def test_plain_lines_by_hand_and_the_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "warning")
    logsetup.setup()
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").warning("shown")
    assert stream.getvalue() == "WARNING: shown\n"


@pytest.mark.parametrize(("level", "expected"), [
    ("", logging.INFO), ("notice", logging.INFO), ("ERR", logging.ERROR), ("nonsense", logging.INFO)])
def test_systemd_level_names(monkeypatch: pytest.MonkeyPatch, level: str, expected: int) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", level)
    logsetup.setup()
    assert logging.getLogger().level == expected


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


# --- errors -----------------------------------------------------------------------------------------


def test_error_hint_is_appended() -> None:
    assert str(TorcxTectonicError("what failed")) == "what failed"
    assert str(InputError("what failed", hint="how to fix")) == "what failed (how to fix)"
    assert InputError("what failed", hint="how to fix").hint == "how to fix"


@pytest.mark.parametrize("kind", [errors.ConfigError, errors.InputError, errors.VerificationError, errors.NetworkError])
def test_every_error_kind_is_a_known_failure(kind: type[TorcxTectonicError]) -> None:
    assert issubclass(kind, TorcxTectonicError)
