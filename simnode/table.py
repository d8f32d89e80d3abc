"""The bench's table: rows under sections, rendered as markdown and written
to docs/performance.md. Plain data, no node: the unit tests check it on any
Python the product supports."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One line of the table."""

    figure: str
    value: float | None
    unit: str
    baseline: str = ""
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        value = "-" if self.value is None else _number(self.value, self.unit)
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}×"
        verdict = {True: "met", False: "MISSED", None: ""}[self.met]
        return [self.figure, value, self.baseline, ratio, self.goal, verdict + (f" ({self.note})" if self.note else "")]


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}{unit}"


@dataclass
class Section:
    """A heading row of the table, and a short paragraph of what the rows under it measure."""

    title: str
    about: str
    first_row: int


@dataclass
class Bench:
    rows: list[Row] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str, about: str) -> None:
        """Rows added from now on are under ``title``; ``about`` says what they measure."""
        self.sections.append(Section(title, " ".join(about.split()), len(self.rows)))

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def failed(self, figure: str, err: BaseException) -> None:
        self.add(Row(figure, None, "", note=f"not measured: {' '.join(str(err).split())[:160]}"))

    def table(self) -> str:
        header = ["figure", "median", "baseline (median, same run)", "ratio", "goal", ""]
        cells = [row.cells() for row in self.rows]
        widths = [max(len(header[i]), *(len(c[i]) for c in cells)) if cells else len(header[i])
                  for i in range(len(header))]

        def line(values: Sequence[str]) -> str:
            return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

        out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        starts = {section.first_row: section.title for section in self.sections}
        for index, row in enumerate(cells):
            if index in starts:
                out.append(line([f"**{starts[index]}**", *[""] * (len(header) - 1)]))
            out.append(line(row))
        return "\n".join(out)

    def document(self, taken: str) -> str:
        """docs/performance.md: the table, what each section's rows measure, and where it was taken."""
        out = ["# Performance", "",
               "Written by `make bench` (`simnode/bench.py`) at the end of a run of every part; edit the",
               "bench, not this file. Each figure is the median of several runs, beside a baseline taken",
               "in the same run on the same machine, with the ratio and the goal. Nothing fails on a slow",
               "machine: a busy one prints slow figures (they move by 10 to 30 % from run to run).",
               "`python -m simnode.bench PART...` runs some parts and only prints.", "",
               self.table(), "", "## What the rows measure", ""]
        for section in self.sections:
            out += [f"**{section.title}.** {section.about}", ""]
        out.append(taken)
        return "\n".join(out) + "\n"


#: Where a run of every part writes its table.
DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))
