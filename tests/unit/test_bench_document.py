"""make bench writes docs/performance.md: the table of whatever rows the parts
added, under their sections, and a paragraph of what each section measures."""

from __future__ import annotations

from simnode.table import DOCUMENT, Bench, Row


def test_the_document_is_the_table_and_what_each_section_measures() -> None:
    bench = Bench()
    bench.section("one part", """
        What its rows
        measure.""")
    bench.add(Row("a figure", 1.5, "ms", "baseline 1.0 ms", 1.5, "≤ 2×", True))
    bench.section("another part", "Another paragraph.")
    bench.add(Row("a slow figure", 3.0, "s", "", None, "< 1 s", False, "why"))
    bench.failed("a part", RuntimeError("no curl\nhere"))
    document = bench.document("taken on this machine")
    table = bench.table()
    assert table in document
    lines = table.splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "**one part**", "a figure", "**another part**", "a slow figure", "a part"]
    assert "| 1.50× |" in lines[3] and "met" in lines[3]
    assert "MISSED (why)" in lines[5] and "not measured: no curl here" in lines[6]
    assert "**one part.** What its rows measure.\n\n**another part.** Another paragraph.\n" in document
    assert document.endswith("\ntaken on this machine\n")


def test_the_committed_document_is_one_the_bench_wrote() -> None:
    text = DOCUMENT.read_text()
    assert text.startswith("# Performance\n\nWritten by `make bench`")
    assert "\n## What the rows measure\n" in text
    assert "\n`make bench` run in " in text
