"""yamldoc: the strict and the literal YAML loaders."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from torcx_tectonic.edges.yamldoc import LiteralLoader, load_mapping
from torcx_tectonic.errors import InputError

#: Nine levels of nine aliases: 9^9 strings once built, 400-odd bytes as text.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
    f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
    for i in range(8)
)


def load(text: str) -> object:
    return load_mapping(text, "f.yaml", "a mapping")


def test_plain_mapping() -> None:
    assert load("a: 1\nb: [x, 2.5, true, null]\n") == {"a": 1, "b": ["x", 2.5, True, None]}


def test_an_alias_bomb_is_refused_at_once_without_building_anything() -> None:
    assert len(ALIAS_BOMB) < 1024
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(InputError) as caught:
            load(ALIAS_BOMB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == "f.yaml:1: not valid YAML (anchors and aliases (& and *) are not allowed); " \
                                "expected a mapping"
    assert time.monotonic() - started < 1 and peak < 1 << 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3: not valid YAML (key 'a' appears twice (lines 1 and 3))"),
        ("{a: 1, a: 2}\n", "f.yaml:1: not valid YAML (key 'a' appears twice (line 1))"),
        ("x:\n  y: 1\n  y: 1\n", "f.yaml:3: not valid YAML (key 'y' appears twice (lines 2 and 3))"),
        ("a: *b\n", "f.yaml:1: not valid YAML (anchors and aliases (& and *) are not allowed)"),
        ("a: &b 1\n", "f.yaml:1: not valid YAML (anchors and aliases (& and *) are not allowed)"),
        ("[" * 5000 + "]" * 5000, "f.yaml: YAML nested too deeply"),
        ("a: !!int x\n", "f.yaml: not valid YAML (a value cannot be built: \"invalid literal for int()"),
        ("a: !!timestamp 2018-02-30\n", "f.yaml: not valid YAML (a value cannot be built: 'day is out of range"),
        ("a: \x00\n", "f.yaml: not valid YAML (character U+0000 at offset 3 is not allowed)"),
        ("a: !!python/object:os.system x\n", "f.yaml:1: not valid YAML (could not determine a constructor"),
        ("? [a]\n: 1\n", "f.yaml:1: not valid YAML (found unhashable key)"),
        ("- a\n", "f.yaml: expected a mapping"),
    ],
    ids=["duplicate", "duplicate-flow", "duplicate-nested", "alias", "anchor", "deep", "bad-int", "bad-date", "nul",
         "python-tag", "unhashable", "not-a-mapping"],
)
def test_refused_documents_name_file_line_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load(text)
    assert str(caught.value).startswith(expected)
    assert str(caught.value).endswith("expected a mapping")


def test_dates_stay_text_as_go_reads_them_into_strings() -> None:
    assert load("a: 2018-02-30\nb: 2018-02-01\n") == {"a": "2018-02-30", "b": "2018-02-01"}


def test_the_literal_loader_keeps_every_plain_scalar_as_written() -> None:
    document = load_mapping("1.10: [17.03, 1.12, 1.0, yes, 0x1F, 1e3]\nnothing:\n", "m", "a mapping", LiteralLoader)
    assert document == {"1.10": ["17.03", "1.12", "1.0", "yes", "0x1F", "1e3"], "nothing": None}


def test_the_garbage_collector_runs_again_after_a_document_is_read_or_refused() -> None:
    load("a: 1\n")
    assert gc.isenabled()
    with pytest.raises(InputError):
        load("a: [unclosed\n")
    assert gc.isenabled()
