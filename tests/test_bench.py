"""`make bench`'s runner: one table, `bench-results.json` with value, baseline and ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.events import measure_store
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
    assert all(f["value"] > 0 and f["baseline"] > 0 and f["ratio"] > 0 for f in share), share
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
