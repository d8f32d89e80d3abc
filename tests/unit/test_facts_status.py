"""facts (what each step recorded) and status.render (showing them to an operator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torcx_tectonic import status
from torcx_tectonic.errors import TorcxTectonicError
from torcx_tectonic.facts import Facts, all_facts


def test_record_and_load(tmp_path: Path) -> None:
    facts = Facts("new-os", root=tmp_path)
    facts.record("next-os", "ok", current_os="1632.3.0", next_os="1688.5.3")
    loaded = facts.load("next-os")
    assert {k: v for k, v in loaded.items() if k != "time"} == {
        "flow": "new-os",
        "step": "next-os",
        "result": "ok",
        "current_os": "1632.3.0",
        "next_os": "1688.5.3",
    }
    assert isinstance(loaded["time"], float)
    assert sorted(p.name for p in (tmp_path / "new-os").iterdir()) == ["next-os.json"]


def test_load_of_a_step_that_has_not_run(tmp_path: Path) -> None:
    facts = Facts("bootstrap", root=tmp_path)
    with pytest.raises(TorcxTectonicError) as caught:
        facts.load("kubelet-version")
    assert str(caught.value) == (
        f"step bootstrap/kubelet-version has not run in this boot "
        f"({tmp_path / 'bootstrap' / 'kubelet-version.json'} missing)"
    )


def test_load_of_a_failed_step_names_its_error(tmp_path: Path) -> None:
    facts = Facts("bootstrap", root=tmp_path)
    facts.record("docker-version", "failed", error="no docker version for Kubernetes v1.9.0")
    with pytest.raises(TorcxTectonicError, match="step bootstrap/docker-version did not succeed: no docker version"):
        facts.load("docker-version")


def test_record_replaces_the_previous_record(tmp_path: Path) -> None:
    facts = Facts("bootstrap", root=tmp_path)
    facts.record("docker-version", "failed", error="x")
    facts.record("docker-version", "ok", plan=None)
    assert facts.load("docker-version")["plan"] is None
    assert "error" not in facts.load("docker-version")
    assert sorted(p.name for p in (tmp_path / "bootstrap").iterdir()) == ["docker-version.json"]


def test_clear_removes_files_only_of_its_flow(tmp_path: Path) -> None:
    bootstrap, new_os = Facts("bootstrap", root=tmp_path), Facts("new-os", root=tmp_path)
    bootstrap.record("next-os", "ok")
    (bootstrap.dir / "sub").mkdir()
    bootstrap.blob_path("manifest-1632.3.0.json").write_text("{}")
    new_os.record("next-os", "ok")
    bootstrap.clear()
    assert [p.name for p in bootstrap.dir.iterdir()] == ["sub"]
    assert new_os.path("next-os").exists()
    Facts("never", root=tmp_path).clear()  # no directory: nothing to do


def test_all_facts_sorted_by_time_skipping_unreadable(tmp_path: Path) -> None:
    for flow, step, when in (("new-os", "gc", 30), ("bootstrap", "next-os", 10), ("new-os", "next-os", 20)):
        (tmp_path / flow).mkdir(exist_ok=True)
        (tmp_path / flow / f"{step}.json").write_text(json.dumps({"flow": flow, "step": step, "time": when}))
    (tmp_path / "new-os" / "broken.json").write_text("{")
    (tmp_path / "new-os" / "manifest-1632.3.0.txt").write_text("not a fact")
    assert [(d["flow"], d["step"]) for d in all_facts(tmp_path)] == [
        ("bootstrap", "next-os"),
        ("new-os", "next-os"),
        ("new-os", "gc"),
    ]
    assert all_facts(tmp_path / "missing") == []


# --- status ------------------------------------------------------------------------------------


def test_render_nothing() -> None:
    assert status.render([]) == "torcx-tectonic: no step has run in this boot\n"


def test_render_blocks_with_facts_sorted_and_failures_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    try:
        text = status.render(
            [
                {
                    "flow": "bootstrap",
                    "step": "next-os",
                    "result": "ok",
                    "time": 0,
                    "next_os": None,
                    "current_os": "1632.3.0",
                },
                {
                    "flow": "bootstrap",
                    "step": "docker-version",
                    "result": "failed",
                    "time": 60,
                    "error": "no docker version for Kubernetes v1.9.0",
                },
            ]
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert text == (
        "1970-01-01 00:00:00 bootstrap/next-os: ok\n"
        '    current_os: "1632.3.0"\n'
        "    next_os: null\n"
        "1970-01-01 00:01:00 bootstrap/docker-version: FAILED\n"
        '    error: "no docker version for Kubernetes v1.9.0"\n'
    )


def test_status_main_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    facts = Facts("new-os", root=tmp_path)
    facts.record("next-os", "ok", current_os="1632.3.0")
    assert status.main([str(tmp_path)]) == 0
    assert "new-os/next-os: ok" in capsys.readouterr().out
    facts.record("gc-stores", "failed", error="boom")
    assert status.main([str(tmp_path)]) == 1
    assert "new-os/gc-stores: FAILED" in capsys.readouterr().out
    assert status.main([str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == "torcx-tectonic: no step has run in this boot\n"
