"""Sessions from the shell and the notebook: `omnikernel sessions | export | prune`, `%export`,
`%fork`, with sessions a real kernel and the real Claude Code CLI stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from omnikernel.cli import main as cli
from omnikernel.events import Event, EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore
from omnikernel.view.export import export_session, gather

from .conftest import REPO, require_claude

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>[click](javascript:alert(3))'
SCENARIO = {
    "rules": [
        {"match": "write the plan", "steps": [
            {"text": "Writing it.", "tool_calls": [{"action": "write", "path": "plan.md", "content": "step one\n"}],
             "usage": {"input_tokens": 1000, "output_tokens": 50}},
            {"text": "Done: plan.md has step one. " + HOSTILE,
             "usage": {"input_tokens": 1100, "output_tokens": 40}},
        ]},
        {"match": "edit the plan", "steps": [
            {"text": "Editing.", "tool_calls": [{"action": "edit", "path": "plan.md", "old": "step one", "new": "step two"}]},
            {"text": "plan.md now says step two."},
        ]},
    ]
}  # fmt: skip


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def elements(page: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every element the page really has (tags and attributes), as a browser would parse it."""
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(page)
    return found


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMNIKERNEL_STORE": str(tmp_path / "store" / "sessions.sqlite3"),
        "OMNIKERNEL_STATE_DIR": str(tmp_path / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "omnikernel.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sessions_export_fork_and_prune_from_notebook_and_shell(
    model, workdir, tmp_path, start_kernel
):
    env = {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        "OMNIKERNEL_SESSION_ID": "planning",
        "OMNIKERNEL_MODEL": "claude-sonnet-4-5",
    }
    kernel = start_kernel(workdir, **env)
    assert kernel.execute("Please write the plan.").status == "ok"
    assert kernel.execute("Please edit the plan.").status == "ok"
    assert (workdir / "plan.md").read_text().strip() == "step two"

    # %export in the notebook: every format, by default beside the notebook.
    for fmt in ("md", "html", "jsonl", "ipynb"):
        result = kernel.execute(f"%export {fmt}")
        assert result.status == "ok" and f"to {workdir / ('planning.' + fmt)}" in result.text
    md = (workdir / "planning.md").read_text()
    assert "> Please write the plan." in md and "Done: plan.md has step one." in md
    assert "**▶ Write**" in md and "-step one\n+step two" in md  # the edit as a diff
    assert "auto-approved" in md or "allow by" in md  # who decided each approval
    assert "Spend:" in md and "$0.0000" not in md.split("## Turn 1")[1].split("## Turn 2")[0]
    page = (workdir / "planning.html").read_text()
    tags = elements(page)
    assert not [t for t, _ in tags if t in ("script", "img", "iframe")]
    assert not [
        a for _, attrs in tags for a, v in attrs if a.startswith("on") or "javascript:" in (v or "")
    ]
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # shown as text, not run
    lines = (workdir / "planning.jsonl").read_text().splitlines()
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == list(range(1, len(seqs) + 1))
    nb = nbformat.read(workdir / "planning.ipynb", as_version=4)
    nbformat.validate(nb)
    assert [c.source for c in nb.cells if c.cell_type == "code"] == [
        "Please write the plan.",
        "Please edit the plan.",
    ]

    bad = kernel.execute("%export pdf")
    assert (
        bad.status == "error"
        and "Unknown export format 'pdf': use one of md, html, jsonl, ipynb" in bad.text
    )
    assert kernel.execute("%export").status == "error"
    assert kernel.execute("%fork a b").status == "error"

    # %fork: continues from here in a new session; the original is left as it was.
    before = len(list(SessionStore(tmp_path / "store" / "sessions.sqlite3").events("planning")))
    forked = kernel.execute("%fork planning-b")
    assert forked.status == "ok" and "Forked planning into planning-b" in forked.text
    assert kernel.execute("Please write the plan.").status == "ok"
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    assert len(list(store.events("planning"))) == before
    assert store.last_turn("planning-b") == 3

    # The shell: list, export, prune.
    listed = run_cli(tmp_path, "sessions")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "SESSION",
        "NOTEBOOK",
        "HARNESSES",
        "TURNS",
        "SPEND",
        "LAST",
        "ACTIVITY",
    ]
    as_json = [json.loads(x) for x in run_cli(tmp_path, "sessions", "--json").stdout.splitlines()]
    spend = next(r["spend_usd"] for r in as_json if r["session_id"] == "planning")
    row = next(r for r in rows if r.startswith("planning "))
    assert f" {workdir} " in row and " claude " in row and " 2 " in row and f"${spend:.4f}" in row
    assert {r["session_id"]: r["turns"] for r in as_json} == {"planning": 2, "planning-b": 3}
    assert all(r["spend_usd"] > 0 for r in as_json)

    out = run_cli(tmp_path, "export", "planning", "--format", "md")
    assert out.returncode == 0 and out.stdout == md
    target = tmp_path / "out.html"
    assert run_cli(tmp_path, "export", "planning", "-f", "html", "-o", str(target)).returncode == 0
    assert target.read_text() == page
    missing = run_cli(tmp_path, "export", "nope")
    assert missing.returncode == 2 and "There is no session 'nope'" in missing.stderr
    assert "omnikernel sessions" in missing.stderr

    kernel.stop()
    state = tmp_path / "state" / "planning"
    assert state.is_dir()  # Claude's own conversation lives here
    assert "Nothing to prune." in run_cli(tmp_path, "prune").stdout  # nothing is 30 days old
    dry = run_cli(tmp_path, "prune", "--older-than", "0", "--dry-run")
    assert "would remove planning" in dry.stdout and state.is_dir()
    gone = run_cli(tmp_path, "prune", "planning")
    assert gone.returncode == 0 and "removed planning" in gone.stdout
    assert not state.exists()
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    assert store.session("planning") is None and list(store.events("planning")) == []
    assert store.session("planning-b") is not None  # the fork stays
    unknown = run_cli(tmp_path, "prune", "planning")
    assert unknown.returncode == 2 and "No such session: planning" in unknown.stderr


@pytest.mark.process  # runs the CLI
def test_cli_bad_input_is_one_clear_line(tmp_path):
    assert run_cli(tmp_path, "export", "x", "--format", "pdf").returncode == 2
    bad = run_cli(tmp_path, "--store", str(tmp_path / "none.sqlite3"), "sessions")
    assert bad.returncode == 2 and "There is no session store at" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert run_cli(tmp_path, "prune", "--older-than", "-1").returncode == 2
    assert run_cli(tmp_path).returncode == 2  # no subcommand: the help


def test_subcommands_can_be_added_by_other_modules(capsys):
    cli.register(
        "hello",
        "say hello",
        lambda p: p.add_argument("who"),
        lambda a: print(f"hello {a.who}") or 0,
    )
    try:
        assert cli.main(["hello", "world"]) == 0
        assert capsys.readouterr().out == "hello world\n"
    finally:
        del cli.SUBCOMMANDS["hello"]


def test_export_gathers_turns_with_approvals_and_who_decided(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("s", "n.ipynb")
    for kind, data in [
        (EventKind.TURN_START, {"prompt": "rm it"}),
        (
            EventKind.TOOL_CALL,
            {"call_id": "c", "tool": "Bash", "action": "exec", "summary": "rm x"},
        ),
        (
            EventKind.APPROVAL_REQUEST,
            {"request_id": "r", "call_id": "c", "tool": "Bash", "summary": "rm x"},
        ),
        (
            EventKind.APPROVAL_DECISION,
            {"request_id": "r", "decision": "deny", "by": "alice", "reason": "no"},
        ),
        (EventKind.SPEND, {"cost_usd": 0.25, "input_tokens": 10, "output_tokens": 5}),
        (EventKind.TURN_END, {"status": "completed"}),
    ]:
        store.append(
            Event(kind, data).stamped(session_id="s", turn=1, harness="claude", ts=time.time())
        )
    (turn,) = gather(store.events("s"))
    assert turn.cost_usd == 0.25 and turn.tokens == 15
    md = export_session(store, "s", "markdown")
    assert "**Approval** for Bash `rm x`: deny by alice: no" in md and "$0.2500" in md


def test_the_omnikernel_command_runs_attach_with_its_own_arguments(tmp_path, capsys):
    store = SessionStore(tmp_path / "sessions.sqlite3")
    store.open_session("attached", str(tmp_path / "a.ipynb"))
    start = Event(EventKind.TURN_START, {"prompt": "summarise the sales"})
    store.append(start.stamped(session_id="attached", harness="claude", turn=1, cell="c1"))
    code = cli.main(
        ["attach", "attached", "--store", str(tmp_path / "sessions.sqlite3"), "--no-follow"]
    )
    assert code == 0
    assert "summarise the sales" in capsys.readouterr().out
    assert "share-server" in cli.parser().format_help()
