"""`make bench`'s runner: one table, `bench-results.json` with value, baseline and ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.events import measure_store
from benchmarks.report import LoadSampler, docs_section, markdown_table, row, summary, update_docs
from benchmarks.turns import descendants, tree_memory

REPO = Path(__file__).resolve().parent.parent


def test_runner_writes_every_figure_with_its_baseline(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--only",
            "sandbox",
            "share",
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    figures = {f["figure"]: f for f in json.loads(out.read_text())["figures"]}
    bwrap = figures["sandbox start: bwrap"]
    assert bwrap["value"] > 0 and bwrap["baseline"] > 0
    assert abs(bwrap["ratio"] - bwrap["value"] / bwrap["baseline"]) < 1e-9
    share = [f for name, f in figures.items() if name.startswith("share")]
    assert {f["figure"] for f in share} >= {
        "share fan-out: 100 viewers, p50",
        "share catch-up: 2,000 events",
        "share: answer on the page -> kernel",
        "share: co-driver's prompt -> turn starts",
    }
    added = figures.pop("share catch-up during 100-viewer fan-out: p99 added")
    share = [f for f in share if f is not added]
    assert all(f["value"] > 0 and f["baseline"] > 0 and f["ratio"] > 0 for f in share), share
    # What a catch-up adds to the viewers' p99 is a difference: noise may make it negative.
    assert added["baseline"] > 0 and added["target"] == "<= 50 ms", added
    assert "sandbox start: bwrap" in done.stdout and "x" in done.stdout


def test_memory_counts_the_whole_process_tree():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in descendants(os.getpid())
        alone = tree_memory(child.pid)
        tree = tree_memory(os.getpid())
        assert tree["processes"] >= 2 and alone["processes"] == 1
        assert tree["rss_mib"] > alone["rss_mib"] > 0 and tree["pss_mib"] > 0
    finally:
        child.kill()
        child.wait()


def test_store_appends_against_a_bare_insert():
    result = measure_store(200)
    assert result["store_appends_per_s"] > 0 and result["bare_inserts_per_s"] > 0
    assert result["ratio"] == result["store_appends_per_s"] / result["bare_inserts_per_s"]


def test_a_target_is_judged_on_the_ratio_or_the_value():
    faster = row("a", 50.0, 100.0, "ms", target=("<=", 0.5, "ratio"))
    slower = row("b", 51.0, 100.0, "ms", target=("<=", 0.5, "ratio"))
    enough = row("c", 10_000.0, 50_000.0, "events/s", target=(">=", 10_000, "value"))
    short = row("d", 9_999.0, 50_000.0, "events/s", target=(">=", 10_000, "value"))
    broken = row("e", None, None, "ms", target=("<=", 100, "value"))
    plain = row("f", 1.0, 2.0, "s")
    assert (faster["met"], slower["met"], enough["met"], short["met"]) == (True, False, True, False)
    assert broken["met"] is False and plain["met"] is None and plain["target"] is None
    assert faster["target"] == "<= x0.50" and enough["target"] == ">= 10,000 events/s"
    rows = [faster, slower, enough, short, broken, plain]
    assert summary(rows) == "targets: 2 of 5 met; not met: b, d, e"
    table = markdown_table(rows)
    assert "| <= x0.50 | met |" in table and "| >= 10,000 events/s | NOT MET |" in table


def test_the_published_table_is_generated_from_the_published_results(tmp_path):
    """docs/performance.md's table is what `--publish` makes of docs/bench-results.json: a
    figure typed into the doc by hand (or a stale table) fails here."""
    published = json.loads((REPO / "docs" / "bench-results.json").read_text())
    assert not published.get("quick"), "the published run must be a full one, not --quick"
    doc = (REPO / "docs" / "performance.md").read_text()
    assert docs_section(published) in doc
    copy = tmp_path / "performance.md"
    copy.write_text(doc.replace("| x", "| y"))
    update_docs(copy, published)
    assert copy.read_text() == doc


def test_the_load_is_sampled_through_the_run():
    with LoadSampler(every_s=0.01) as load:
        time.sleep(0.1)
    figures = load.summary()
    assert len(load.samples) >= 3
    assert figures["min"] <= figures["median"] <= figures["max"] and figures["every_s"] == 0.01
