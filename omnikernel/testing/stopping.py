"""The states a turn can be stopped in, scripted for the fake model; shared by the stop tests and
`python -m benchmarks.stop`.

`stop_in_state` drives one stop through a real `AgentSession`. Each state is a prompt whose scripted answer keeps the agent busy in that state for half a
minute: streaming text, waiting for an approval, running a command that leaves a background
child and a setsid'd double-forked daemon behind (each writes a file a few seconds later
unless it is killed), and waiting on a model that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnikernel.approvals.decide import Decision
from omnikernel.events import Event, EventKind

if TYPE_CHECKING:
    from omnikernel.rehearsal.fake_model import FakeModelServer
    from omnikernel.session.core import AgentSession

#: Files the running command's processes write unless the stop killed them.
LATE_FILES = ("late.txt", "background.txt", "slow.txt")
#: Seconds after the command starts by which every one of them would have been written.
LATE_AFTER_S = 6.0
#: The running command writes this first, so a test knows it runs.
STARTED_FILE = "started.txt"
#: The summary of the command whose approval never comes (see `never_decide`).
APPROVAL_MARK = "waits-for-approval"

SLOW_COMMAND = (
    f"echo started > {STARTED_FILE}; "
    "setsid -f sh -c 'sleep 4; echo late > late.txt' >/dev/null 2>&1; "
    "(sleep 5; echo background > background.txt) >/dev/null 2>&1 & "
    "sleep 30; echo slow > slow.txt"
)

#: State name -> the prompt that brings the agent into it.
STATES = {
    "streaming": "stop-state streaming",
    "approval": "stop-state approval",
    "command": "stop-state command",
    "slow-model": "stop-state slow model",
}
#: The prompt run after each stop; its answer proves the agent goes on.
RECALL = "stop-state recall"
RECALL_ANSWER = "Ready for the next task."

SCENARIO: dict[str, Any] = {
    "rules": [
        # First: after a stop, agents carry the unanswered prompt into the next request.
        {"match": "stop-state recall", "steps": [{"text": RECALL_ANSWER}]},
        # 30 s of ticks: the stop comes at the first tick a harness shows, which a loaded
        # machine can delay by many seconds (OpenCode's start); the rest is never sent. Each
        # tick is numbered: Gemini CLI's loop detection ends a turn that repeats itself.
        {"match": "stop-state streaming",
         "steps": [{"text": " ".join(f"tick{i}" for i in range(1800)), "chunk_delay": 0.05}]},
        {"match": "stop-state approval", "steps": [
            {"text": "Asking first.",
             "tool_calls": [{"action": "shell", "command": f"echo {APPROVAL_MARK} > approved.txt"}]},
            {"text": "Approved and done."}]},
        {"match": "stop-state command", "steps": [
            {"text": "Running the long command.",
             "tool_calls": [{"action": "shell", "command": SLOW_COMMAND}]},
            {"text": "The long command finished."}]},
        {"match": "stop-state slow model", "steps": [{"text": "Too late.", "delay": 60}]},
    ]
}  # fmt: skip


@dataclasses.dataclass
class Stopped:
    """One stop: how long it took and the stopped turn's events (the stop's own included)."""

    state: str
    latency_s: float
    events: list[Event]

    @property
    def end(self) -> Event:
        return self.events[-1]


def hold_approvals(session: AgentSession, harness: str) -> None:
    """Make `harness`'s decision function wait for a person who never answers, for the
    command marked `APPROVAL_MARK` (as an approval widget's decide would); others as before."""
    agent = session._harness(harness)
    decide = agent.ctx.decide

    async def held(request: Event) -> Decision:
        if APPROVAL_MARK in str(request.data.get("summary", "")):
            await asyncio.Event().wait()  # nobody ever clicks
        return await decide(request)

    agent.ctx.decide = held


async def stop_in_state(
    session: AgentSession, state: str, model: FakeModelServer, work: Path, reach_s: float = 90
) -> Stopped:
    """Run `state`'s prompt, stop the turn once it is in that state (as the kernel does on
    SIGINT: cancel the consumer, then `stop_turn`), and time the stop."""
    seen: list[Event] = []
    asked = len(model.requests)

    async def consume() -> None:
        async for event in session.run_prompt(STATES[state]):
            seen.append(event)

    def reached() -> bool:
        if state == "streaming":
            return any(e.kind == EventKind.TEXT and "tick" in e.data["text"] for e in seen)
        if state == "approval":
            return any(e.kind == EventKind.APPROVAL_REQUEST for e in seen)
        if state == "command":
            return (work / STARTED_FILE).exists()
        return any(STATES[state] in json.dumps(r.body) for r in model.requests[asked:])

    task = asyncio.ensure_future(consume())
    deadline = time.monotonic() + reach_s
    while not reached():
        if task.done() or time.monotonic() > deadline:
            task.cancel()
            raise AssertionError(f"the turn never reached {state!r}: {[e.kind for e in seen]}")
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # well inside the state (the command's sleep, the model's wait)
    started = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    stopped = await session.stop_turn()
    return Stopped(state, time.monotonic() - started, seen + stopped)
