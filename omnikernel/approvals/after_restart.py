"""Approvals a dead kernel left waiting: shown again, still answerable, carried out once.

When a kernel dies while an approval waits, the agent's request dies with its CLI, but the
request is an event in the store. The next kernel of the session closes the cut turn (see
`AgentSession._close_cut_turns`) and then reopens every approval of a cut turn that was never
decided (pauses at model calls, network asks and pushes the broker read excepted: the model
call, the connection are gone):

- it is shown again in that first cell, as the same approval card, and answerable from
  ``omnikernel attach --approve/--deny`` and the share page too (their answers reach it through
  the store, `from_share.watch_answers`); it waits with no timeout, across restarts, until a
  person answers;
- the answer is stored as the request's ``approval_decision`` (who, from where, with
  ``after_restart``), written while holding the session's turn lock (`turnlock`), so it never
  lands inside another turn; the first answer wins, in this kernel and across kernels
  (`SessionStore.append_decision`); a later one is told who was first;
- approved: a new turn of the harness that asked (its conversation resumed) tells the agent the
  person approved it, and a `Grant` lets exactly that action through once without asking;
  anything else still asks, and the grant ends with that turn;
- denied: the agent is told at its next turn (`denials_to_tell`), once.

A policy that denies the action now (a deny rule added since) denies it again, recorded the
same way: a grant never overrides a deny.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from omnikernel.approvals import decide as approval
from omnikernel.approvals.pending import PendingApprovals
from omnikernel.events import Event, EventKind
from omnikernel.policy import Request, Verdict, request_of
from omnikernel.store.sessions import SessionStore
from omnikernel.store.turnlock import TurnLock, lock_path

log = logging.getLogger(__name__)

#: What an input holds besides the action itself (the agent's own wording of it).
COSMETIC_KEYS = frozenset({"description", "justification", "timeout", "timeout_ms"})


def left_waiting(events: Iterable[Event]) -> list[Event]:
    """The approval requests of turns cut off by a dead kernel that nobody decided, oldest
    first (pauses, network asks and brokered pushes left out: the model call or connection
    they held is gone)."""
    requests: dict[str, Event] = {}
    decided: set[str] = set()
    cut: set[int] = set()
    for event in events:
        rid = str(event.data.get("request_id", ""))
        held = event.data.get("action") in ("pause", "network", "push")
        if event.kind == EventKind.APPROVAL_REQUEST and not held:
            requests.setdefault(rid, event)
        elif event.kind == EventKind.APPROVAL_DECISION:
            decided.add(rid)
        elif event.kind == EventKind.TURN_END and event.data.get("cut_off"):
            cut.add(event.turn)
    return [e for rid, e in requests.items() if rid not in decided and e.turn in cut]


def denials_to_tell(events: Iterable[Event], harness: str) -> list[Event]:
    """Denials given after a restart to `harness`'s requests that no turn told it yet."""
    asked_by: dict[str, str] = {}
    denied: dict[str, Event] = {}
    told: set[str] = set()
    for event in events:
        rid = str(event.data.get("request_id", ""))
        if event.kind == EventKind.APPROVAL_REQUEST:
            asked_by[rid] = event.harness
        elif event.kind == EventKind.APPROVAL_DECISION and event.data.get("after_restart"):
            if event.data.get("decision") != "allow":
                denied[rid] = event
        elif event.kind == EventKind.TURN_START:
            told.update(str(r) for r in event.data.get("told_denials") or ())
    return [d for rid, d in denied.items() if rid not in told and asked_by.get(rid) == harness]


def describe(data: dict[str, Any]) -> str:
    """The action in a sentence's words: "the command `git push` (Bash)", "Edit `app.py`"."""
    tool_input = data.get("input") or {}
    what = tool_input.get("command") if isinstance(tool_input, dict) else None
    if isinstance(what, list):
        what = " ".join(str(w) for w in what)
    tool = data.get("tool") or "a tool"
    if data.get("action") == "exec":
        return f"the command `{what or data.get('summary', '')}` ({tool})"
    return f"{tool} `{data.get('summary', '')}`"


def denial_note(denials: list[Event], requests: dict[str, Event]) -> str:
    """What the agent is told of denials given after a restart, before its next prompt."""
    lines = []
    for decided in denials:
        request = requests.get(str(decided.data.get("request_id", "")))
        what = describe(request.data) if request is not None else "an action"
        lines.append(
            f"- {what}: denied by {decided.data.get('by', 'a person')} "
            f"({decided.data.get('source', '')}). Do not do it."
        )
    return (
        "Before the notebook's kernel restarted you asked for approval of the following; "
        "the answer came after the restart:\n" + "\n".join(lines)
    )


def follow_up_prompt(request: Event, decision: approval.Decision) -> str:
    """The turn that carries out an approval given after a restart."""
    what = describe(request.data)
    return (
        f"Before the notebook's kernel restarted, you asked for approval of {what}, and "
        f"that turn was cut off while it waited. {decision.by} has approved it now (from "
        f"{decision.source}). Do exactly that now, once, with the same input, and say what "
        f"it did. Anything else still needs its own approval."
    )


def _essence(data: dict[str, Any]) -> tuple[str, str]:
    """What identifies an action for a grant: its kind and its input without cosmetic keys."""
    tool_input = data.get("input") or {}
    if isinstance(tool_input, dict):
        if data.get("action") == "exec" and "command" in tool_input:
            command = tool_input["command"]
            key: Any = " ".join(map(str, command)) if isinstance(command, list) else str(command)
            key = " ".join(key.split())
        else:
            key = {k: v for k, v in tool_input.items() if k not in COSMETIC_KEYS}
    else:
        key = tool_input
    return str(data.get("action", "")), json.dumps(key, sort_keys=True, default=str)


@dataclasses.dataclass
class Grant:
    """One action a person approved after a restart: allowed once, during one turn."""

    request_id: str
    essence: tuple[str, str]
    decision: approval.Decision
    used: bool = False

    @classmethod
    def of(cls, request: Event, decision: approval.Decision) -> Grant:
        return cls(str(request.data.get("request_id", "")), _essence(request.data), decision)

    def take(self, data: dict[str, Any]) -> approval.Decision | None:
        """The decision for `data` if it is exactly the granted action and the grant is
        unused (it is used up then); None otherwise."""
        if self.used or _essence(data) != self.essence:
            return None
        self.used = True
        made = self.decision
        return dataclasses.replace(
            made,
            reason=f"{made.reason}; approved after the kernel restart (request "
            f"{self.request_id}), allowed this once",
        )


class TurnRunner(Protocol):
    """What reopening approvals needs of the session that reopens them (the session, one layer
    up, provides it; this module never imports it). Carrying out an approval runs a turn."""

    store: SessionStore
    session_id: str
    cwd: Path
    approvals: PendingApprovals

    def judge(self, request: Request) -> Verdict: ...

    def took_decision(self, stored: Event, decision: approval.Decision) -> None: ...

    def run_prompt(
        self,
        prompt: str,
        *,
        harness: str | None = None,
        cell: str = "",
        handoff: bool = True,
        grant: Grant | None = None,
        lock: TurnLock | None = None,
    ) -> AsyncIterator[Event]: ...

    def turn_running(self, harness: str) -> bool: ...

    async def stop_turn(self, harness: str | None = None, cell: str = "") -> list[Event]: ...


class ReopenedApprovals:
    """The approvals of one session left waiting by a dead kernel, reopened in this one."""

    def __init__(self, session: TurnRunner):
        self.session = session
        #: How the events of a turn this runs are shown (the kernel shows them in the cell of
        #: the card; without a kernel they are only stored).
        self.show_turn: Callable[[AsyncIterator[Event]], Awaitable[None]] = _drain
        #: How a notice that is not an event is shown (the kernel displays it in that cell).
        self.say: Callable[[str], None] = log.info
        self._tasks: set[asyncio.Task[None]] = set()
        #: Found by `reopen`, shown by `present`: (request, the ask, the cell).
        self._presented: list[tuple[Event, approval.Decision, str]] = []

    def reopen(self, cell: str) -> list[Event]:
        """Show again every approval left waiting; returns the notices stored about them (the
        caller holds the session's turn lock)."""
        session = self.session
        notices = []
        for request in left_waiting(session.store.events(session.session_id)):
            data = request.data
            verdict = session.judge(request_of(data, session.cwd))
            asked = approval.decide(request, verdict, auto_approve=False)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(request.ts))
            if not asked.needs_person and not asked.allow:  # a rule denies it now
                self._record(request, asked)
                message = (
                    f"An approval left waiting when the kernel stopped, {describe(data)} "
                    f"(turn {request.turn}), is denied now: {asked.reason}. "
                    f"{request.harness} is told at its next turn."
                )
                notices.append(self._notice(request, message, cell))
                continue
            rid = str(data.get("request_id", ""))
            reason = (
                f"asked in turn {request.turn} ({request.harness}, {when}) before the "
                f"kernel restarted; approving runs a new turn that does exactly this, once"
            )
            asked = approval.Decision(
                "ask",
                reason,
                asked.by or "default",
                asked.rules or ("default",),
                subject=asked.subject,
            )
            message = (
                f"An approval was still waiting when the kernel stopped: {describe(data)}, "
                f"asked in turn {request.turn}. Answer it below (or from a terminal: "
                f"`omnikernel attach {session.session_id} --approve {rid}` or `--deny {rid}`): "
                f"approving runs a new {request.harness} turn that does exactly this, once."
            )
            notices.append(self._notice(request, message, cell))
            self._presented.append((request, asked, cell))
        return notices

    def _notice(self, request: Event, message: str, cell: str) -> Event:
        """A notice stored with the cut turn the request belongs to, shown in this cell."""
        return self.session.store.append(
            Event(EventKind.NOTICE, {"message": message}).stamped(
                session_id=request.session_id, harness=request.harness, turn=request.turn, cell=cell
            )
        )

    def present(self) -> None:
        """Show the cards of what `reopen` found (after its notices are shown)."""
        waiting, self._presented = self._presented, []
        for request, asked, cell in waiting:

            def decided(
                decision: approval.Decision, request: Event = request, cell: str = cell
            ) -> None:
                task = asyncio.ensure_future(self._answered(request, decision, cell))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

            rid = str(request.data.get("request_id", ""))
            self.session.approvals.reopen(rid, request.data, asked, on_decided=decided)

    async def _answered(self, request: Event, decision: approval.Decision, cell: str) -> None:
        """Store the answer under the turn lock; approved, run the turn that carries it out."""
        session = self.session
        if decision.allow and session.session_id != request.session_id:
            self.say(
                f"Not used: this kernel runs another session now (`%session`), so it cannot "
                f"carry out {describe(request.data)}. The approval still waits in session "
                f"{request.session_id}: answer it there."
            )
            return
        lock = TurnLock(lock_path(session.store.path, request.session_id))
        await lock.acquire(
            lambda holder: self.say(
                "The answer is taken; it is stored (and, if approved, carried out) when the "
                f"running turn of this session ends ({holder or 'another kernel'})."
            )
        )
        if decision.allow and session.session_id != request.session_id:  # switched meanwhile
            lock.release()
            self.say(
                f"Not used: this kernel switched to another session while {describe(request.data)} "
                "waited for the running turn; the approval still waits in its session."
            )
            return
        try:
            stored, first = self._record(request, decision)
        except BaseException:
            lock.release()
            raise
        if not first:
            lock.release()
            verb = "approved" if stored.data.get("decision") == "allow" else "denied"
            self.say(
                f"Too late: {describe(request.data)} was {verb} already by "
                f"{stored.data.get('by')} ({stored.data.get('source')}); the first answer "
                "wins, so this one is not used."
            )
            return
        session.took_decision(stored, decision)
        if not decision.allow:
            lock.release()
            self.say(
                f"Denied {describe(request.data)}: {request.harness} is told at its next turn."
            )
            return
        turn = session.run_prompt(
            follow_up_prompt(request, decision),
            harness=request.harness,
            cell=cell,
            handoff=True,
            grant=Grant.of(request, decision),
            lock=lock,
        )
        try:
            await self.show_turn(turn)
        except asyncio.CancelledError:  # the kernel stops: store the turn's end, free the lock
            if session.turn_running(request.harness):
                await session.stop_turn(request.harness, cell)
            raise

    def _record(self, request: Event, decision: approval.Decision) -> tuple[Event, bool]:
        data = request.data
        event = Event(
            EventKind.APPROVAL_DECISION,
            {
                "request_id": data.get("request_id", ""),
                "decision": decision.verdict,
                **decision.event_data(),
                "call_id": data.get("call_id", ""),
                "pause_marks": [],
                "after_restart": True,
            },
        ).stamped(
            session_id=request.session_id,
            harness=request.harness,
            turn=request.turn,
            cell=request.cell,
        )
        return self.session.store.append_decision(event)


async def _drain(events: AsyncIterator[Event]) -> None:
    async for _ in events:
        pass
