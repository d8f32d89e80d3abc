"""`make node`, the main job, as a test: the simulated node's whole life passes
every check, and the status of the healthy node exits 0 (the story checks it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simnode import life


def test_the_simulated_node_lives_its_whole_life(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = life.main()
    out = capsys.readouterr().out
    assert "[FAILED]" not in out, out
    assert code == 0, out
    assert out.count("torcx-tectonic status: both verdicts ok (exit status 0)") == 4
    assert "will this node boot with the docker its Kubernetes needs? yes" in out
