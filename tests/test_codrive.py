"""Co-drivers' prompts through a real kernel: a prompt queued by the share page (the store is
the bus, as `jupyter_ext.share.server` writes it) runs as a turn of the notebook's session and
shows in the session feed; it never reaches IPython nor the notebook's Python values; its
approvals are answered like any other; a cell that comes meanwhile waits; the stop button and
the feed's Stop end it."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from omnikernel.events import EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes
from omnikernel.view.export import export_session

from .conftest import require_cli

SCENARIO = {"rules": [
    {"match": "co-driver hello", "steps": [{"text": "Hello from the agent, co-driver."}]},
    {"match": "co-driver writes", "steps": [
        {"text": "Writing it.",
         "tool_calls": [{"action": "shell", "command": "echo codrive > codrive.txt"}]},
        {"text": "Wrote codrive.txt."}]},
    # Turns the test stops stream for minutes, so a loaded machine cannot end them first.
    {"match": "co-driver slow (again|once more)", "steps": [
        {"text": "tick " * 9000, "chunk_delay": 0.05}]},
    {"match": "co-driver slow", "steps": [{"text": "tick " * 900, "chunk_delay": 0.05}]},
    {"match": "cell question", "steps": [{"text": "The cell's answer."}]},
]}  # fmt: skip
WHO = "co-drive at 10.0.0.7"


@pytest.fixture
def model():
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "sessions.sqlite3"


def feed_session(path: Path, timeout: float = 30) -> str:
    """The session whose feed the kernel shows (it says so in the store, for the page)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            db = sqlite3.connect(path)
            try:
                rows = db.execute("SELECT session_id FROM share_feeds").fetchall()
            except sqlite3.OperationalError:  # the kernel has not made the share tables yet
                rows = []
            db.close()
            if rows:
                return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("the kernel never opened a session feed")


def wait_for(
    store: SessionStore, session: str, kind: EventKind, count: int = 1, timeout: float = 120
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(store.events(session, kinds=(kind,)))
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(
        f"no {count} {kind} event(s) in {timeout} s: {list(store.events(session))}"
    )


def feed_text(kernel) -> str:
    """What the session feed shows, read from the kernel's widget state."""
    result = kernel.execute(
        "%%python\nimport json\n"
        "print(json.dumps([o['data'].get('text/plain', '') for o in "
        "get_ipython().kernel.codriving.feed.outputs]))"
    )
    return "\n".join(json.loads(result.text.strip().splitlines()[-1]))


def test_a_co_drivers_prompt_runs_as_a_turn_in_the_feed(model, workdir, start_kernel, tmp_path):
    require_cli("claude")
    kernel = start_kernel(
        workdir,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="k",
        OMNIKERNEL_HARNESS="claude",
    )
    assert kernel.execute("%%python\nsecret = 'sk-notebook-owner'").status == "ok"
    shared = kernel.execute("%share")
    assert "sends prompts" in shared.text and "Session feed" in shared.text, shared.text
    session = feed_session(store_path(tmp_path))
    codes, store = ShareCodes(store_path(tmp_path)), SessionStore(store_path(tmp_path))

    # Neither IPython nor the notebook's values: the prompt reaches the agent as written.
    codes.post_prompt(
        session, "co-driver hello {secret}\n!touch pwned.txt\n%env", WHO, "share page"
    )
    end = wait_for(store, session, EventKind.TURN_END)[-1]
    assert end.data["status"] == "completed", list(store.events(session))
    start = list(store.events(session, kinds=(EventKind.TURN_START,)))[-1]
    assert start.data["by"] == WHO and start.data["source"] == "share page"
    assert "{secret}" in start.data["prompt"] and "sk-notebook-owner" not in str(
        list(store.events(session))
    )
    assert not (workdir / "pwned.txt").exists()
    shown = feed_text(kernel)
    assert (
        f"▶ prompt by {WHO} (share page), run with" in shown
        and "Hello from the agent, co-driver." in shown
    )
    assert "claude" in shown  # the turn's footer
    exported = export_session(store, session, "markdown")
    assert f"prompt from {WHO} (share page)" in exported  # the record says who asked

    # Its approval is the session's: asked in the feed, answered from the page.
    codes.post_prompt(session, "co-driver writes a file", WHO, "share page")
    ask = wait_for(store, session, EventKind.APPROVAL_REQUEST)[-1]
    assert "APPROVAL NEEDED" in feed_text(kernel)  # the card, in the feed
    codes.post_answer(session, ask.data["request_id"], True, WHO, "share page")
    wait_for(store, session, EventKind.TURN_END, count=2)
    assert (workdir / "codrive.txt").read_text().strip() == "codrive"
    decision = list(store.events(session, kinds=(EventKind.APPROVAL_DECISION,)))[-1]
    assert decision.data["decision"] == "allow" and WHO in decision.data["reason"]


def test_a_cell_waits_for_a_co_drivers_turn_and_stops_end_it(
    model, workdir, start_kernel, tmp_path
):
    require_cli("claude")
    kernel = start_kernel(
        workdir,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="k",
        OMNIKERNEL_HARNESS="claude",
    )
    kernel.execute("%share feed")
    session = feed_session(store_path(tmp_path))
    codes, store = ShareCodes(store_path(tmp_path)), SessionStore(store_path(tmp_path))

    # A cell sent while a co-driver's turn streams waits for it, then runs: turns never mix.
    codes.post_prompt(session, "co-driver slow", WHO, "share page")
    wait_for(store, session, EventKind.TEXT)
    cell = kernel.execute("cell question", timeout=120)
    assert cell.status == "ok", cell.text
    assert "co-driver's prompt from the share page runs" in cell.text
    assert "The cell's answer." in cell.text
    turns = [e.turn for e in store.events(session) if e.turn]
    assert turns == sorted(turns), "the two turns' events interleave"
    ends = list(store.events(session, kinds=(EventKind.TURN_END,)))
    assert [e.data["status"] for e in ends] == ["completed", "completed"]

    # JupyterLab's stop button (SIGINT) while no cell runs ends the co-driver's turn.
    codes.post_prompt(session, "co-driver slow again", WHO, "share page")
    texts = len(list(store.events(session, kinds=(EventKind.TEXT,))))
    deadline = time.monotonic() + 60
    while len(list(store.events(session, kinds=(EventKind.TEXT,)))) <= texts:
        assert time.monotonic() < deadline, "the second co-driver turn never streamed"
        time.sleep(0.05)
    kernel.km.interrupt_kernel()
    ends = wait_for(store, session, EventKind.TURN_END, count=3, timeout=30)
    assert ends[-1].data["status"] == "interrupted", ends[-1].data
    assert kernel.alive()

    # The feed's own Stop button does the same (clicked here through the kernel, as its
    # comm message would).
    codes.post_prompt(session, "co-driver slow once more", WHO, "share page")
    wait_for(store, session, EventKind.TURN_START, count=4)
    time.sleep(1)
    clicked = kernel.execute(
        "%%python\nb = get_ipython().kernel.codriving.feed.stop_button\n"
        "print('enabled' if not b.disabled else 'disabled'); b.click()"
    )
    assert "enabled" in clicked.text, clicked.text
    ends = wait_for(store, session, EventKind.TURN_END, count=4, timeout=30)
    assert ends[-1].data["status"] == "interrupted", ends[-1].data
    after = kernel.execute("cell question")
    assert after.status == "ok" and "The cell's answer." in after.text, after.text
