"""An approval left waiting by a killed kernel survives: the next kernel shows it again, it
can be answered (the card's button, or the store from a terminal), the answer is stored once,
and an approved command runs exactly once in a new turn; a denial is told to the agent.

Real parts throughout: the claude CLI from npm, real kernels killed with SIGKILL, the store;
the model is the scripted fake one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from omnikernel.cli import main as cli
from omnikernel.events import Event, EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes

from .conftest import require_claude
from .test_kernel_control import run_and_answer
from .test_share import SESSION as SHARED
from .test_share import add, clock, join, share, store  # noqa: F401  (fixtures)

COMMAND = "echo mark >> marks.txt"
SCENARIO = {
    "rules": [
        # The turn that carries out an approval given after the restart: the command, then
        # the same command again (which must ask again: the approval covered one run).
        {"match": "has approved it now", "steps": [
            {"text": "Running it now.", "tool_calls": [{"action": "shell", "command": COMMAND}]},
            {"text": "Once more.", "tool_calls": [{"action": "shell", "command": COMMAND}]},
            {"text": "Ran it as approved."},
        ]},
        {"match": "say hello", "steps": [{"text": "Hello after the restart."}]},
        {"match": "append the mark", "steps": [
            {"text": "Appending.", "tool_calls": [{"action": "shell", "command": COMMAND}]},
            {"text": "Appended."},
        ]},
    ]
}  # fmt: skip


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def env_for(model: FakeModelServer, session: str) -> dict[str, str]:
    # No auto-approval: the command asks a person.
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OMNIKERNEL_SESSION_ID": session,
    }


def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "sessions.sqlite3")


def stored(tmp_path: Path, session: str, kind: EventKind | None = None) -> list[Event]:
    db = SessionStore(store_path(tmp_path))
    try:
        return list(db.events(session, kinds=(kind,) if kind else ()))
    finally:
        db.close()


def wait_for(what: str, found: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)
    return value


def kill_while_waiting(model, workdir, tmp_path, start_kernel, session: str) -> str:
    """A kernel asks to run COMMAND and is killed while the approval waits; its request id."""
    first = start_kernel(workdir, **env_for(model, session))
    first.kc.execute("Please append the mark.")
    (asked,) = wait_for(
        "the command asks", lambda: stored(tmp_path, session, EventKind.APPROVAL_REQUEST)
    )
    pid = first.km.provisioner.pid
    orphans = psutil.Process(pid).children(recursive=True)
    os.kill(pid, signal.SIGKILL)
    first.km.provisioner.process.wait(10)
    for orphan in orphans:  # the CLI dies with its sandbox, or here
        with contextlib.suppress(psutil.NoSuchProcess):
            orphan.kill()
    assert not stored(tmp_path, session, EventKind.APPROVAL_DECISION)
    assert not (workdir / "marks.txt").exists()
    return str(asked.data["request_id"])


def attach(tmp_path: Path, session: str, verb: str, request_id: str) -> int:
    return cli.main(["attach", session, "--store", store_path(tmp_path), verb, request_id])


def decisions(tmp_path: Path, session: str, request_id: str) -> list[dict[str, Any]]:
    return [
        e.data
        for e in stored(tmp_path, session, EventKind.APPROVAL_DECISION)
        if e.data.get("request_id") == request_id
    ]


def carry_out_and_refuse_a_second_run(tmp_path: Path, session: str, request_id: str) -> Event:
    """The turn that carries the approval out runs the command; its second try asks again and
    is denied from the store; the turn ends. Returns that turn's end."""
    (start,) = wait_for(
        "the approved command's turn starts",
        lambda: [
            e
            for e in stored(tmp_path, session, EventKind.TURN_START)
            if e.data.get("carries_out") == request_id
        ],
    )

    def waiting() -> list[str]:
        events = [e for e in stored(tmp_path, session) if e.turn == start.turn]
        decided = {e.data["request_id"] for e in events if e.kind == EventKind.APPROVAL_DECISION}
        return [
            str(e.data["request_id"])
            for e in events
            if e.kind == EventKind.APPROVAL_REQUEST and e.data["request_id"] not in decided
        ]

    (again,) = wait_for("the second run asks again", waiting)
    assert attach(tmp_path, session, "--deny", again) == 0
    (end,) = wait_for(
        "the turn ends",
        lambda: [e for e in stored(tmp_path, session, EventKind.TURN_END) if e.turn == start.turn],
    )
    return end


def assert_once(workdir: Path, tmp_path: Path, session: str, request_id: str, source: str) -> None:
    assert (workdir / "marks.txt").read_text() == "mark\n"  # the command ran exactly once
    (decided,) = decisions(tmp_path, session, request_id)
    assert decided["decision"] == "allow" and decided["source"] == source, decided
    assert decided["after_restart"] is True and decided["by"]


def test_a_waiting_approval_is_shown_again_after_a_kill_and_its_card_approves_it_once(
    model, workdir, tmp_path, start_kernel, capsys
):
    request_id = kill_while_waiting(model, workdir, tmp_path, start_kernel, "card")
    second = start_kernel(workdir, **env_for(model, "card"))
    # The first cell shows the waiting approval again, as the card; its Approve is clicked.
    first_cell = run_and_answer(second, "Please say hello.", ["Approve"])
    assert first_cell.status == "ok", first_cell.text
    assert "An approval was still waiting" in first_cell.text and COMMAND in first_cell.text
    assert "APPROVAL NEEDED" in first_cell.text  # the card's text (the widget elsewhere)
    end = carry_out_and_refuse_a_second_run(tmp_path, "card", request_id)
    assert end.data["status"] == "completed", end.data
    assert_once(workdir, tmp_path, "card", request_id, "widget")
    # The grant was used once: the second run was asked and denied, and stored so.
    (granted,) = [
        e.data
        for e in stored(tmp_path, "card", EventKind.APPROVAL_DECISION)
        if e.turn == end.turn and e.data.get("decision") == "allow"
    ]
    assert "after the kernel restart" in granted["reason"], granted
    # A second answer is refused, saying who was first.
    capsys.readouterr()
    assert attach(tmp_path, "card", "--deny", request_id) == 2
    assert "decided already" in capsys.readouterr().err
    assert len(decisions(tmp_path, "card", request_id)) == 1
    assert second.execute("Please say hello.").status == "ok"  # the session goes on
    assert (workdir / "marks.txt").read_text() == "mark\n"


def test_a_waiting_approval_is_approved_from_a_terminal_while_the_new_kernel_is_idle(
    model, workdir, tmp_path, start_kernel, capsys
):
    request_id = kill_while_waiting(model, workdir, tmp_path, start_kernel, "terminal")
    second = start_kernel(workdir, **env_for(model, "terminal"))
    shown = second.execute("Please say hello.")
    assert shown.status == "ok" and "An approval was still waiting" in shown.text, shown.text
    assert f"--approve {request_id}" in shown.text  # how to answer it from a terminal
    assert not (workdir / "marks.txt").exists()  # nothing runs before a person answers
    assert attach(tmp_path, "terminal", "--approve", request_id) == 0
    capsys.readouterr()
    assert attach(tmp_path, "terminal", "--approve", request_id) == 2  # on its way, or decided
    assert "first answer wins" in capsys.readouterr().err
    carry_out_and_refuse_a_second_run(tmp_path, "terminal", request_id)
    assert_once(workdir, tmp_path, "terminal", request_id, "terminal")


def test_the_stop_button_ends_the_turn_that_carries_out_an_approval(
    model, workdir, tmp_path, start_kernel
):
    request_id = kill_while_waiting(model, workdir, tmp_path, start_kernel, "stopped")
    second = start_kernel(workdir, **env_for(model, "stopped"))
    assert second.execute("Please say hello.").status == "ok"
    assert attach(tmp_path, "stopped", "--approve", request_id) == 0
    (start,) = wait_for(
        "the approved command's turn starts",
        lambda: [
            e
            for e in stored(tmp_path, "stopped", EventKind.TURN_START)
            if e.data.get("carries_out") == request_id
        ],
    )
    # Its second run asks again; nobody answers: the turn runs with no cell running. (The
    # first request of the turn is the approved run's own, let through by the grant: waiting
    # for it alone would stop the turn before the approved command ran.)
    wait_for(
        "the second run asks",
        lambda: [
            e
            for e in stored(tmp_path, "stopped", EventKind.APPROVAL_REQUEST)
            if e.turn == start.turn
        ][1:],
    )
    second.km.interrupt_kernel()  # JupyterLab's stop button
    (end,) = wait_for(
        "the turn ends",
        lambda: [
            e for e in stored(tmp_path, "stopped", EventKind.TURN_END) if e.turn == start.turn
        ],
        timeout=30,
    )
    assert end.data["status"] == "interrupted", end.data
    assert (workdir / "marks.txt").read_text() == "mark\n"  # the approved run only
    after = second.execute("Please say hello.")
    assert after.status == "ok" and "Hello after the restart." in after.text, after.text


def test_a_waiting_approval_denied_after_a_kill_is_told_to_the_agent_once(
    model, workdir, tmp_path, start_kernel
):
    request_id = kill_while_waiting(model, workdir, tmp_path, start_kernel, "denied")
    # Answered while no kernel runs the session: the answer waits in the store.
    assert attach(tmp_path, "denied", "--deny", request_id) == 0
    second = start_kernel(workdir, **env_for(model, "denied"))
    first_cell = second.execute("Please say hello.")
    assert first_cell.status == "ok" and "An approval was still waiting" in first_cell.text
    (decided,) = wait_for("the denial is stored", lambda: decisions(tmp_path, "denied", request_id))
    assert decided["decision"] == "deny" and decided["source"] == "terminal"
    model.requests.clear()
    told = second.execute("Please say hello.")
    assert told.status == "ok" and "Told claude of 1 denial(s)" in told.text, told.text
    prompts = [str(body) for body in model.bodies("/v1/messages")]
    assert any("denied by" in p and COMMAND in p for p in prompts)
    again = second.execute("Please say hello.")  # told once, not again
    assert again.status == "ok" and "denial" not in again.text, again.text
    told_in = [
        e.turn
        for e in stored(tmp_path, "denied", EventKind.TURN_START)
        if e.data.get("told_denials")
    ]
    assert len(told_in) == 1
    assert not (workdir / "marks.txt").exists()
    assert len(decisions(tmp_path, "denied", request_id)) == 1


def test_the_share_page_refuses_a_second_answer_while_the_first_is_on_its_way(
    share,
    store,
):
    """No kernel has taken the first answer yet (it is busy, or none runs the session after a
    restart): a second answer is refused, naming the first, so the first answer wins."""
    codes = ShareCodes(store.path)
    add(store, EventKind.APPROVAL_REQUEST, request_id="r9", tool="Bash", summary=COMMAND)
    headers = join(share, codes.new_code(SHARED, "rw")).headers
    first = requests.post(
        f"{share.url}/api/answer", json={"request_id": "r9", "allow": True}, headers=headers
    )
    assert first.status_code == 202, first.text
    second = requests.post(
        f"{share.url}/api/answer", json={"request_id": "r9", "allow": False}, headers=headers
    )
    assert second.status_code == 409 and "already approved by co-drive" in second.text
    assert codes.take_answer(SHARED, "r9")[0] is True and codes.take_answer(SHARED, "r9") is None


def test_a_network_ask_a_dead_kernel_left_is_not_reopened():
    """Its connection died with the kernel: reopening it would approve nothing (a pause too)."""
    from omnikernel.approvals.after_restart import left_waiting

    def event(kind: EventKind, **data) -> Event:
        return Event(kind, data, session_id="s", harness="claude", turn=1)

    events = [
        event(EventKind.APPROVAL_REQUEST, request_id="r1", action="exec", summary="git push"),
        event(EventKind.APPROVAL_REQUEST, request_id="net-t1-1", action="network",
              input={"host": "pypi.org", "port": 443}),
        event(EventKind.APPROVAL_REQUEST, request_id="pause-1", action="pause"),
        event(EventKind.APPROVAL_REQUEST, request_id="push-t1-1-abc", action="push",
              input={"remote": "github.com/acme/app", "updates": []}),
        event(EventKind.TURN_END, status="error", cut_off=True),
    ]  # fmt: skip
    assert [e.data["request_id"] for e in left_waiting(events)] == ["r1"]
