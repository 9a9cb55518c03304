"""The shipped notebooks, executed headless by nbclient with the real CLI, fully offline: no
credentials are configured, so the kernel's offline rehearsal model answers, at $0.

Nobody clicks a card in a headless run, so a person answers from a terminal instead
(`omnikernel.testing.notebooks.Approver`, which the docs build uses too)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat

from omnikernel.testing.notebooks import Approver
from omnikernel.testing.notebooks import run_notebook as run_from

from .conftest import REPO, kernel_env, require_claude, require_cli


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def run_notebook(
    name: str, tmp_path: Path, approver: Approver | None = None
) -> tuple[Path, nbformat.NotebookNode]:
    """Execute `name` from a copy of the notebooks folder; `approver` answers its cards."""
    require_claude()
    return run_from(REPO / "notebooks", name, tmp_path, kernel_env(tmp_path), approver)


def store_of(tmp_path: Path) -> Path:
    return Path(kernel_env(tmp_path)["OMNIKERNEL_STORE"])


def test_quickstart_runs_offline_end_to_end(tmp_path):
    approver = Approver(store_of(tmp_path))
    work, nb = run_notebook("quickstart.ipynb", tmp_path, approver)
    code = [c for c in nb.cells if c.cell_type == "code"]
    by_source = {c.source.splitlines()[0]: outputs_text(c) for c in code}
    assert not any("%autoapprove" in c.source for c in code)

    # A tool call really ran: the agent asked to write hello.py, a card showed the ask, a
    # person approved it, and the file is in the notebook's folder.
    hello = work / "hello.py"
    assert hello.is_file(), by_source
    create = by_source["Create a Python file hello.py that prints a friendly greeting."]
    assert "▶ Write" in create and "hello.py" in create
    assert "APPROVAL NEEDED: Write" in create and "Approve or Deny" in create, create
    assert "approved by" in create and "(terminal)" in create, create
    assert "(terminal) (terminal)" not in create, create
    assert "offline rehearsal model" in create  # every affected output says so
    assert "$0 (rehearsal)" in create  # the footer: a rehearsal spends nothing
    assert [a["tool"] for a in approver.answered] == ["Write", "Bash"]

    # The next cell continued the conversation and ran the file (its command asked too).
    run = by_source["Now run hello.py and tell me what it printed."]
    assert "▶ Bash" in run and "python3 hello.py" in run
    greeting = hello.read_text()
    assert "print(" in greeting

    python = by_source["%%python"]
    assert greeting.strip().splitlines()[0] in python

    history = by_source["%history"]
    assert history.count("completed") == 2 and "$0 (rehearsal)" in history

    # The gauge and %spend at the end of the run: $0, a rehearsal; the links, with no share
    # server running, are made and say how to start one.
    spend = by_source["%spend"]
    assert "$0 spent (rehearsal)" in spend and "0.2225" not in spend
    shared = by_source["%share"]
    assert "/join?code=" in shared and "No share server is running" in shared


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
    assert "best region: North" in python[3] and "its revenue: 3930" in python[3]
    assert "AgentResult(claude turn 1 · completed · 1 tool call" in python[4]
    # The agent looked at df in the live kernel (no CSV dump) and proposed the plotting cell,
    # which the notebook then runs as a person would.
    looked = " ".join(
        outputs[
            "Look at df in the kernel and propose a cell that plots its revenue by month for "
            "each region."
        ].split()
    )  # streamed text is wrapped where its chunks ended: compare words
    assert "kernel_variables" in looked and "kernel_inspect" in looked, looked
    assert "notebook_insert_cell" in looked and "proposed below this one" in looked
    assert "APPROVAL" not in looked  # reading the kernel and proposing a cell never ask
    plotted = [c for c in nb.cells if c.source.startswith("%%python\nby_month")][0]
    assert any("image/png" in o.get("data", {}) for o in plotted.outputs), plotted.outputs


def test_control_notebook_asks_for_the_push_pauses_and_dry_runs_a_policy(tmp_path):
    require_cli("npm")
    approver = Approver(store_of(tmp_path))
    work, nb = run_notebook("control.ipynb", tmp_path, approver)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # Streamed text is wrapped where its chunks ended: compare words.
    outputs = {c.source.splitlines()[0]: " ".join(outputs_text(c).split()) for c in code}
    assert not any("%autoapprove" in c.source for c in code)

    # The install asked (the default ask), was approved, and ran.
    installed = outputs["Please install the package in shop."]
    assert "APPROVAL NEEDED: Bash" in installed and "npm install" in installed, installed
    assert (work / "shop" / "node_modules" / "localpkg").exists(), installed
    # Then the push asked because of push-after-install, naming the install that armed it.
    pushed = outputs["Please push the shop's work."]
    assert "push-after-install" in pushed and "a package install ran earlier" in pushed, pushed
    assert "approved by" in pushed and "The push step is finished." in pushed
    branches = subprocess.run(
        ["git", "--git-dir", str(work / "shop-remote.git"), "branch"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "main" in branches

    # The dollar rule is listed but never comes in a $0 rehearsal; the token rule pauses the
    # next model call until Continue.
    assert "pause-every 100" in outputs["%policy add pause-every 100"]
    asked = outputs["What did we do in the shop?"]
    assert "PAUSED" in asked and "pause-every 5k tokens" in asked, asked
    assert "pause: continued" in asked and "We installed the local package" in asked
    assert "pause" in [a.get("action") for a in approver.answered]
    spend = outputs["%spend"]
    assert "$0 spent (rehearsal)" in spend and "next pause at" in spend, spend

    # The dry run: the stricter file would have denied the push and asked for the install.
    dry = outputs["%policy test strict-policy.toml"]
    assert "Dry run of strict-policy.toml" in dry, dry
    assert "git push -q origin HEAD:main deny deny 'git push'" in dry, dry
    assert "npm install --offline --no-audit --no-fund ./pkg ask ask 'npm install'" in dry, dry
    assert "pause pause-every 3k tokens" in dry and "1 ask, 1 deny, 3 pause" in dry, dry
