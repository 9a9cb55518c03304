"""Switching harnesses keeps the work going: handoffs (pure) and the kernel end to end."""

from __future__ import annotations

import json

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.session.handoff import build_handoff, review_prompt, turns_of
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_cli


def turn(number: int, harness: str, prompt: str, answer: str, *calls: dict) -> list[Event]:
    def at(kind, data):
        return Event(kind, data, turn=number, harness=harness)

    events = [at(EventKind.TURN_START, {"prompt": prompt})]
    events += [at(EventKind.TOOL_CALL, c) for c in calls]
    events += [
        at(EventKind.TEXT, {"text": answer}),
        at(EventKind.TURN_END, {"status": "completed"}),
    ]
    return events


EDIT = {"tool": "Edit", "action": "edit", "summary": "app.py",
        "input": {"file_path": "app.py", "old_string": "x = 1\n", "new_string": "x = 2\n"}}  # fmt: skip
HISTORY = (
    turn(1, "claude", "write app.py", "Wrote it.",
         {"tool": "Write", "action": "write", "summary": "app.py", "input": {"content": "x = 1\n"}})
    + turn(2, "codex", "bump x", "Bumped.", EDIT)
    + turn(3, "claude", "add tests", "Added tests.",
           {"tool": "Bash", "action": "exec", "summary": "pytest -q", "input": {}})
)  # fmt: skip


def test_handoff_carries_what_the_harness_missed():
    to_codex = build_handoff(HISTORY, "codex")
    assert to_codex is not None and to_codex.turns == 1  # codex saw turns 1-2 itself
    assert "add tests" in to_codex.text and "bump x" not in to_codex.text
    to_pi = build_handoff(HISTORY, "pi")
    assert to_pi is not None and to_pi.turns == 3 and to_pi.harnesses == ("claude", "codex")
    assert to_pi.files == ("app.py",) and "Bash pytest -q" in to_pi.text
    assert to_pi.text.startswith("<omnigent-handoff>") and to_pi.text.endswith(
        "</omnigent-handoff>"
    )
    assert build_handoff(HISTORY, "claude") is None  # claude did the last turn
    # A fresh process (after a kernel restart) knows nothing: it gets every turn, its own too.
    restarted = build_handoff(HISTORY, "claude", since=0)
    assert restarted is not None and restarted.turns == 3


def test_handoff_is_condensed_to_its_budget_newest_first():
    long = sum((turn(n, "claude", f"step {n}", "word " * 2000) for n in range(1, 30)), [])
    carried = build_handoff(long, "codex", budget=3000)
    assert carried is not None and len(carried.text) < 3600
    assert "step 29" in carried.text and "step 1:" not in carried.text
    assert "left out to fit" in carried.text


def test_review_prompt_shows_the_other_agents_diff():
    prompt, reviewed = review_prompt(HISTORY[:-4], "claude")  # up to codex's turn
    assert reviewed.harness == "codex" and "bump x" in prompt
    assert "-x = 1" in prompt and "+x = 2" in prompt and "do not modify" in prompt
    with pytest.raises(LookupError, match="no turn by another agent"):
        review_prompt(turn(1, "claude", "a", "b"), "claude")
    assert [t.number for t in turns_of(HISTORY)] == [1, 2, 3]


SCENARIO = {
    "rules": [
        {"match": "^please create the notes file", "steps": [
            {"text": "Writing notes.", "tool_calls": [{"action": "shell", "command": "echo handed > notes.txt"}]},
            {"text": "Created notes.txt."}]},
        # First: a review prompt quotes the reviewed turn's prompt.
        {"match": "review the last turn", "steps": [{"text": "Review: looks right to me."}]},
        {"match": "which file", "steps": [{"text": "The notes file, notes.txt."}]},
    ]
}  # fmt: skip


@pytest.fixture
def model():
    for cli in ("claude", "codex", "pi"):
        require_cli(cli)
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def test_switching_mid_notebook_hands_the_work_over(model, workdir, start_kernel):
    kernel = start_kernel(
        workdir,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="k",
        OPENAI_BASE_URL=model.base_url + "/v1",
        OPENAI_API_KEY="k",
        OMNIKERNEL_AUTO_APPROVE="1",
    )
    first = kernel.execute("Please create the notes file.")
    assert first.status == "ok" and (workdir / "notes.txt").exists()

    assert "Switched to codex" in kernel.execute("%agent codex").text
    second = kernel.execute("Which file did you create?")
    assert second.status == "ok", second.text
    assert "Handed over to codex: 1 earlier turn by claude" in second.text
    assert "The notes file" in second.text and "codex" in second.text
    sent = json.dumps(model.bodies("/v1/responses")[-1])
    assert "omnigent-handoff" in sent and "create the notes file" in sent

    review = kernel.execute("%%agent claude --review\nCheck the file name too.")
    assert review.status == "ok", review.text
    assert "Review: looks right to me." in review.text
    sent = json.dumps(model.bodies("/v1/messages")[-1])
    assert "Review the last turn of the codex agent" in sent and "Check the file name too." in sent

    third = kernel.execute("%%agent pi\nWhich file did you create?")
    assert third.status == "ok", third.text
    assert "Handed over to pi: 3 earlier turns by claude, codex" in third.text
    history = kernel.execute("%history")
    for harness in ("claude", "codex", "pi"):
        assert harness in history.text
    agents = kernel.execute("%agents").text
    for name, version in (("codex", "0.169.0"), ("pi", "0.73.1"), ("claude-acp", "")):
        row = next(line for line in agents.splitlines() if name in line.split())
        assert "yes" in row and version in row and "bwrap" in row
