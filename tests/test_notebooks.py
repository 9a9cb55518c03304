"""The shipped notebooks, executed headless by nbclient with the real CLI, fully offline: no
credentials are configured, so the kernel's offline rehearsal model answers."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO, kernel_env, require_claude, require_cli


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def run_notebook(name: str, tmp_path: Path) -> tuple[Path, nbformat.NotebookNode]:
    require_claude()
    work = tmp_path / "nb"
    shutil.copytree(REPO / "notebooks", work)
    nb = nbformat.read(work / name, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="omnikernel", resources={"metadata": {"path": str(work)}}
    )
    client.execute(env=kernel_env(tmp_path))
    return work, nb


def test_quickstart_runs_offline_end_to_end(tmp_path):
    work, nb = run_notebook("quickstart.ipynb", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: outputs_text(c) for c in code}

    # A tool call really ran: the agent wrote hello.py in the notebook's folder, and it works.
    hello = work / "hello.py"
    assert hello.is_file(), by_source
    create = by_source["Create a Python file hello.py that prints a friendly greeting."]
    assert "▶ Write" in create and "hello.py" in create
    assert "offline rehearsal model" in create  # every affected output says so
    assert "auto-approved" in create

    # The next cell continued the conversation and ran the file.
    run = by_source["Now run hello.py and tell me what it printed."]
    assert "▶ Bash" in run and "python3 hello.py" in run
    greeting = hello.read_text()
    assert "print(" in greeting

    python = by_source["%%python"]
    assert greeting.strip().splitlines()[0] in python

    history = by_source["%history"]
    assert history.count("completed") == 2


def test_three_agents_notebook_runs_offline(tmp_path):
    for cli in ("codex", "pi"):
        require_cli(cli)
    work, nb = run_notebook("three-agents.ipynb", tmp_path)
    outputs = {c.source.splitlines()[0]: outputs_text(c) for c in nb.cells if c.cell_type == "code"}
    assert "fizzbuzz" in (work / "fizzbuzz.py").read_text()
    assert (work / "test_fizzbuzz.py").is_file()

    written = outputs[
        "Write fizzbuzz.py with a fizzbuzz(n) function and a main block that prints 1 to 15."
    ]
    assert "codex" in written and "shell" in written
    review = outputs["%%agent claude --review"]
    assert "Review." in review and "claude" in review
    tests = outputs["Add test_fizzbuzz.py with the checks the review asked for, and run it."]
    assert "Handed over to pi: 2 earlier turns by codex, claude" in tests
    assert "all fizzbuzz checks passed" in tests
    assert "FizzBuzz" in outputs["%%python"]
    history = outputs["%history"]
    assert all(h in history for h in ("codex", "claude", "pi")) and history.count("completed") == 3


def test_data_analysis_notebook_passes_data_both_ways(tmp_path):
    work, nb = run_notebook("data-analysis.ipynb", tmp_path)
    outputs = {c.source.splitlines()[0]: outputs_text(c) for c in nb.cells if c.cell_type == "code"}
    asked = outputs["%%agent claude --out answer"]
    assert "{df} ← DataFrame 12×3 → agent-data/df.csv" in asked
    assert "▶ Bash" in asked and "3930 North" in asked  # the agent's command read the file
    assert (work / "agent-data" / "df.csv").read_text().startswith("region,month,revenue")
    python = [outputs_text(c) for c in nb.cells if c.cell_type == "code"]
    assert "best region: North" in python[-2] and "its revenue: 3930" in python[-2]
    assert "AgentResult(claude turn 1 · completed · 1 tool call" in python[-1]
