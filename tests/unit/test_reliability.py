"""docs/reliability.md is what tests/reliability.py renders, and every case
in it names a test that exists: the document and the campaign stay in step."""

from __future__ import annotations

import re
from pathlib import Path

from tests import reliability

ROOT = Path(__file__).resolve().parents[2]


def test_the_document_is_what_the_cases_render() -> None:
    assert reliability.DOC.read_text() == reliability.render(), \
        "run: python -m tests.reliability > docs/reliability.md"


def test_every_case_names_a_test_that_exists() -> None:
    for case in (*reliability.FAULTS, *reliability.POWER_CASES, *reliability.RACES):
        path, _, function = case.test.partition("::")
        name = function.split("[", 1)[0]
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE), case.test


def test_the_campaign_is_as_large_as_promised_and_every_case_is_named_once() -> None:
    kills = [p.id for p in (*reliability.KILL_POINTS, *reliability.STALL_KILLS)]
    cases = [f"{c.area}/{c.id}" for c in (*reliability.FAULTS, *reliability.POWER_CASES, *reliability.RACES)]
    assert len(kills) >= 50 and len(set(kills)) == len(kills)
    assert len(set(cases)) == len(cases)
    assert all(p.outcome == "as before" or p.outcome == "as after" or p.outcome.startswith("after: ")
               for p in (*reliability.KILL_POINTS, *reliability.STALL_KILLS))


def test_the_readme_links_the_document() -> None:
    assert "docs/reliability.md" in (ROOT / "README.md").read_text()
