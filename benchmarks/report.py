"""What `make bench` reports: a figure beside its baseline, its target and whether it is met.

Every figure is a value and a baseline measured in the same run; a figure the issues set a goal
for carries that goal as a `Target` (a bound on the ratio or on the value), and the report says
"met" or "not met" beside it, so a run answers "are we there?" without reading the docs. The
machine's load is sampled through the run (`LoadSampler`) and printed with the table: a ratio
measured at a load of 6 is not the same claim as one at a load of 1.

The published table in docs/performance.md is generated from a full run's results
(`update_docs`), never typed by hand; `tests/test_bench.py` checks it matches the results file
committed beside it.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
from pathlib import Path
from typing import Any, Literal

Op = Literal["<=", ">="]
On = Literal["ratio", "value"]
Target = tuple[Op, float, On]

DOCS_TABLE_START = "<!-- bench-table-start -->"
DOCS_TABLE_END = "<!-- bench-table-end -->"


def describe_target(target: Target | None, unit: str) -> str:
    """`<= x1.10`, `>= 10,000 events/s`: the goal as the table shows it."""
    if target is None:
        return ""
    op, bound, on = target
    if on == "ratio":
        return f"{op} x{bound:.2f}"
    return f"{op} {fmt(bound)} {unit}".rstrip()


def target_met(target: Target | None, value: float | None, ratio: float | None) -> bool | None:
    """Whether the figure meets its target; None when it has none or was not measured."""
    if target is None:
        return None
    op, bound, on = target
    measured = ratio if on == "ratio" else value
    if measured is None:
        return False
    return measured <= bound if op == "<=" else measured >= bound


def row(
    figure: str,
    value: float | None,
    baseline: float | None,
    unit: str,
    note: str = "",
    target: Target | None = None,
) -> dict[str, Any]:
    """One figure of the report (what `bench-results.json` holds per figure)."""
    ratio = value / baseline if value is not None and baseline else None
    return {
        "figure": figure,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "unit": unit,
        "note": note,
        "target": describe_target(target, unit) or None,
        "met": target_met(target, value, ratio),
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def verdict(figure: dict[str, Any]) -> str:
    met = figure.get("met")
    return "" if met is None else ("met" if met else "NOT MET")


def print_table(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["figure"]) for r in rows)
    targets = max([len(r.get("target") or "") for r in rows] + [6])
    print(
        f"{'figure':{width}}  {'value':>10}  {'baseline':>10}  {'ratio':>7}  "
        f"{'target':{targets}}  {'':7}  unit  note"
    )
    for r in rows:
        ratio = f"x{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        print(
            f"{r['figure']:{width}}  {fmt(r['value']):>10}  {fmt(r['baseline']):>10}  "
            f"{ratio:>7}  {r.get('target') or '':{targets}}  {verdict(r):7}  "
            f"{r['unit']:4}  {r['note']}"
        )
    print(summary(rows))


def summary(rows: list[dict[str, Any]]) -> str:
    judged = [r for r in rows if r.get("met") is not None]
    missed = [r["figure"] for r in judged if not r["met"]]
    line = f"targets: {len(judged) - len(missed)} of {len(judged)} met"
    return line + (f"; not met: {', '.join(missed)}" if missed else "")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown (docs/performance.md)."""
    lines = [
        "| figure | value | baseline | ratio | target | | unit | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"x{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        lines.append(
            f"| {r['figure']} | {fmt(r['value'])} | {fmt(r['baseline'])} | {ratio} | "
            f"{r.get('target') or ''} | {verdict(r)} | {r['unit']} | {r['note']} |"
        )
    return "\n".join(lines)


def describe_run(result: dict[str, Any]) -> str:
    """One sentence on where and under what load a run was measured."""
    machine = result["machine"]
    load = machine.get("load") or {}
    where = f"{machine['cpus']} cores, {machine['platform']}, Python {machine['python']}"
    if load:
        where += (
            f"; load average {load['min']:.1f} to {load['max']:.1f}, median "
            f"{load['median']:.1f} (sampled every {load['every_s']:.0f} s)"
        )
    return f"Measured on {where}; the run took {result['seconds'] / 60:.0f} minutes."


def docs_section(result: dict[str, Any]) -> str:
    rows = result["figures"]
    return "\n".join(
        [
            DOCS_TABLE_START,
            describe_run(result),
            "",
            markdown_table(rows),
            "",
            summary(rows) + ".",
            DOCS_TABLE_END,
        ]
    )


def update_docs(doc: Path, result: dict[str, Any]) -> None:
    """Replace the table between the markers in `doc` with `result`'s."""
    text = doc.read_text()
    pattern = re.compile(re.escape(DOCS_TABLE_START) + ".*?" + re.escape(DOCS_TABLE_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{doc} has no {DOCS_TABLE_START} ... {DOCS_TABLE_END} block")
    doc.write_text(pattern.sub(lambda _: docs_section(result), text))


class LoadSampler:
    """The 1-minute load average, sampled in a thread while the bench runs."""

    def __init__(self, every_s: float = 15.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {
            "min": min(self.samples),
            "median": statistics.median(self.samples),
            "max": max(self.samples),
            "every_s": self.every_s,
        }
