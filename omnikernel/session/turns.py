"""Running and stopping a session's turns, and recording their events.

The session owns the order of things. For every prompt it opens a turn, runs it on the chosen
harness, stamps each event with its place (session id, turn, cell, harness) and appends it to
the store before handing it on (`_record`), so whatever shows an event shows something already
durable. A fast stream of text deltas is group-committed: while the harness's next message is
already read and is text again (`Harness.text_ready`), the text is held (up to `BATCH_EVENTS`
events or `BATCH_S`), then committed in one transaction and only then handed on; the harness is
never asked for anything else (which may ask an approval, or show a card) while text is held.
One turn of a session runs at a time, across kernels: a turn holds the session's turn
lock (`omnikernel.store.turnlock`) from its start to its stored end, and the store numbers it.
A turn is stored as ended exactly once: by its harness's ``turn_end``, by `stop_turn` after its
consumer was cancelled (marked interrupted, saying what was stopped), or, when its kernel died,
by the next kernel (`_close_cut_turns`). An answer's text deltas pass a `TextStream`, so a
credential the model spells out over several deltas is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from omnikernel import events as ev
from omnikernel.approvals.after_restart import (
    Grant,
    ReopenedApprovals,
    denial_note,
    denials_to_tell,
)
from omnikernel.events import Event, EventKind
from omnikernel.gateway.credentials import HOW_TO_LOG_IN
from omnikernel.harnesses import Harness, HarnessError
from omnikernel.policy import PolicyState, observe
from omnikernel.sandbox.spec import explain_refusal
from omnikernel.session.handoff import Turn, build_handoff, review_prompt
from omnikernel.session.network import Refusal, refusal_notice
from omnikernel.session.spend import STOP_SETTLE_S, rehearsal_usage
from omnikernel.store.redact import Redactor, TextStream
from omnikernel.store.sessions import SessionStore, StoreUnavailableError
from omnikernel.store.turnlock import TurnLock, lock_path

if TYPE_CHECKING:
    from omnikernel.approvals import decide as approval
    from omnikernel.gateway import Gateway
    from omnikernel.sandbox.broker_setup import BrokerSetup

#: Who runs a turn, noted in its start: this host and kernel process (see `kernel_alive`).
KERNEL_MARK = f"{socket.gethostname()}:{os.getpid()}"
#: The most text events committed together, and the longest the first of them waits for its
#: commit. Text is held only while more of it is already read, so a slow stream commits (and
#: shows) each delta at once; these bound a fast one.
BATCH_EVENTS = 256
BATCH_S = 0.02


class SessionTurns:
    """The running part of `AgentSession` (a mixin: its state is set by `_init_turns`; the
    names annotated below belong to the other parts)."""

    store: SessionStore
    session_id: str
    notebook: str
    cwd: Path
    turn: int
    current: str
    models: dict[str, str | None]
    first_notice: str | None
    sandbox: str
    allow_hosts: tuple[str, ...]
    readable: tuple[Path, ...]

    if TYPE_CHECKING:

        def broker_setup(self) -> BrokerSetup | None: ...

    redactor: Redactor
    policy_state: PolicyState
    after_restart: ReopenedApprovals
    _opened: bool
    _harnesses: dict[str, Harness]
    _grant: Grant | None
    _decisions: dict[str, tuple[approval.Decision, str, list[list[float | str]]]]
    _loop: asyncio.AbstractEventLoop | None
    _cell_context: contextvars.Context | None
    _current_cell: str

    if TYPE_CHECKING:

        def take_refusals(self, harness: str, call_id: str | None = None) -> list[Refusal]: ...

        @property
        def gateway(self) -> Gateway: ...

        def _harness(self, name: str) -> Harness: ...

        async def _warmed(self, name: str) -> None: ...

        def _used(self, name: str) -> None: ...

        def spend_line(self) -> str: ...

        def _drain_spend(self, name: str, cell: str) -> list[Event]: ...

        async def _settle_spend(self, name: str, cell: str, within: float = ...) -> list[Event]: ...

        def _cross_check(self, name: str, reported: float | None) -> None: ...

    def _init_turns(self) -> None:
        #: The last turn each harness's process took part in (in this kernel).
        self._last_turn_of: dict[str, int] = {}
        #: Harnesses whose CLI version this kernel compared with the pinned one already.
        self._versions_checked: set[str] = set()
        #: What the running turn is doing, by harness (what a stop stops), while it is open.
        self._activity: dict[str, TurnActivity] = {}
        #: The session's turn lock while this kernel runs a turn (released with its end).
        self._turn_lock: TurnLock | None = None
        #: A turn whose consumer was cancelled and that nobody stopped yet (`stop_turn`).
        self._cancelled_turn: str | None = None
        #: Text events read but not committed yet (nothing shows them before their commit).
        self._held: list[Event] = []
        self._held_since = 0.0
        #: Events committed with another (`_record` commits what is held first) and not yet
        #: handed on by the turn that read them.
        self._unshown: list[Event] = []

    def _record(self, event: Event, harness: str, cell: str) -> Event:
        if not self._opened:
            self.store.open_session(self.session_id, self.notebook)
            self._opened = True
        if event.kind == EventKind.APPROVAL_DECISION:
            made = self._decisions.pop(str(event.data.get("request_id", "")), None)
            if made is not None:  # who decided, from where, by which rules, for what scope
                decision, call_id, marks = made
                event = event.stamped(
                    data={
                        **event.data,
                        **decision.event_data(),
                        "call_id": call_id,
                        "pause_marks": marks,
                    }
                )
        stamped = event.stamped(
            session_id=self.session_id, harness=harness, turn=self.turn, cell=cell
        )
        if self._held:  # held text goes first, in the same transaction: the store keeps order
            *earlier, stored = self._commit([*self._held, stamped])
            self._held = []
            self._unshown += earlier
            return stored
        return self._observed(self.store.append(stamped))

    def _observed(self, stored: Event) -> Event:
        """What follows an event's commit: the policy sees it; a turn's end frees the session."""
        self.policy_state = observe(self.policy_state, stored, self.cwd)
        if stored.kind == EventKind.TURN_END:
            self._end_turn_lock()
            self._used(stored.harness)  # idle from now on (`omnikernel.session.idle`)
        return stored

    def _commit(self, stamped: list[Event]) -> list[Event]:
        """Commit stamped events in one transaction (a group commit), in order."""
        if not self._opened:
            self.store.open_session(self.session_id, self.notebook)
            self._opened = True
        return [self._observed(e) for e in self.store.append_many(stamped)]

    def _hold(self, event: Event, harness: str, cell: str, data: dict[str, Any]) -> None:
        """Keep a text event (with `data`, its text as shown) for the next commit (see
        `_held_ready`)."""
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append(
            event.stamped(
                session_id=self.session_id, harness=harness, turn=self.turn, cell=cell, data=data
            )
        )

    def _held_ready(self, agent: Harness) -> list[Event]:
        """Commit the held text, unless more of it is already read and the batch has room
        and time left; return what may be shown now (committed), in order."""
        if (
            self._held
            and len(self._held) < BATCH_EVENTS
            and time.monotonic() - self._held_since < BATCH_S
            and agent.text_ready()
        ):
            return []
        return self._release_held()

    def _release_held(self) -> list[Event]:
        """Commit whatever is held; return it after what was committed but not shown yet."""
        held, self._held = self._held, []
        stored = self._commit(held) if held else []
        out, self._unshown = self._unshown, []
        return out + stored

    def _end_turn_lock(self) -> None:
        """The turn ended (or was given up): the next one, here or in another kernel, may run."""
        self._grant, self._cancelled_turn = None, None
        lock, self._turn_lock = self._turn_lock, None
        if lock is not None:
            lock.release()

    def _waiting_notice(self, holder: str) -> str:
        mine = f"kernel {os.getpid()} "
        who = (
            "this kernel (an approval answered after a restart runs its own turn)"
            if holder.startswith(mine)
            else holder or "another kernel"
        )
        return (
            f"Another turn of this session is running, in {who}; waiting for it to end "
            "before this one starts (turns of one session run one at a time, so each is "
            "stored whole). The stop button stops waiting."
        )

    def _close_cut_turns(self) -> list[Event]:
        """Mark interrupted each turn of this session that started and never ended because its
        kernel died (SIGKILL, a crash, the machine going down); say so in this cell. A turn
        another live kernel is still running is left alone."""
        started: dict[int, Event] = {}
        for event in self.store.events(
            self.session_id, kinds=(EventKind.TURN_START, EventKind.TURN_END)
        ):
            if event.kind == EventKind.TURN_START:
                started[event.turn] = event
            else:
                started.pop(event.turn, None)
        out = []
        for turn, start in sorted(started.items()):
            if kernel_alive(str(start.data.get("kernel", ""))):
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start.ts))
            why = (
                f"Turn {turn} ({start.harness}, started {when}) was cut off: its kernel "
                f"stopped before the turn ended. It is marked interrupted; what it stored "
                f"is kept, and the conversation goes on from there."
            )
            end = {"status": "interrupted", "stopped": "the kernel stopped", "cut_off": True}
            for event in (ev.notice(why), Event(EventKind.TURN_END, end)):
                out.append(
                    self.store.append(
                        event.stamped(
                            session_id=self.session_id,
                            harness=start.harness,
                            turn=turn,
                            cell=start.cell,
                        )
                    )
                )
        return out

    def review_prompt(self, reviewer: str, extra: str = "") -> tuple[str, Turn]:
        """The prompt asking `reviewer` to review another harness's latest turn."""
        return review_prompt(self.store.events(self.session_id), reviewer, extra)

    async def run_prompt(
        self,
        prompt: str,
        *,
        harness: str | None = None,
        cell: str = "",
        handoff: bool = True,
        on_wait: Callable[[str], None] | None = None,
        grant: Grant | None = None,
        lock: TurnLock | None = None,
        origin: dict[str, str] | None = None,
    ) -> AsyncIterator[Event]:
        """Run one prompt; yield its events (already stored), the last of kind ``turn_end``.

        With `handoff`, a harness that missed turns of other harnesses gets them first. The
        turn waits for the session's turn lock (`turnlock`; `on_wait` is told why, once), or
        runs under `lock`, already held; `grant` lets one approved action through unasked.
        `origin` (``by``, ``source``) says who sent a prompt that no cell of this notebook
        did (a co-driver's, `omnikernel.kernel.codrive`); it is stored with the turn's start."""
        name = harness or self.current
        if self._cancelled_turn is not None:  # its consumer never stopped it: end it now
            await self.stop_turn(self._cancelled_turn)
        if lock is None:
            lock = TurnLock(lock_path(self.store.path, self.session_id))
            holder = f"kernel {os.getpid()} on {socket.gethostname()} ({name}, {self.notebook})"
            try:
                await lock.acquire(
                    lambda held: on_wait(self._waiting_notice(held)) if on_wait else None, holder
                )
            except OSError as exc:  # the store's folder is not writable: say so, like a write
                raise StoreUnavailableError(lock.path, exc) from exc
        self._turn_lock, self._grant = lock, grant
        self._unshown = []  # stored, never shown by a turn that ended: not this cell's
        try:
            if not self._opened:  # the first event of this kernel: close turns a dead one left
                self.store.open_session(self.session_id, self.notebook)
                self._opened = True
                for event in self._close_cut_turns():
                    if event.kind == EventKind.NOTICE:
                        yield event
                for event in self.after_restart.reopen(cell):
                    yield event
                self.after_restart.present()
            told = denials_to_tell(
                self.store.events(
                    self.session_id,
                    kinds=(
                        EventKind.APPROVAL_REQUEST,
                        EventKind.APPROVAL_DECISION,
                        EventKind.TURN_START,
                    ),
                ),
                name,
            )
            # The store numbers the turn: another kernel may add turns to this session too.
            start = self.store.start_turn(
                Event(
                    EventKind.TURN_START,
                    {"prompt": prompt, "model": self.models.get(name), "kernel": KERNEL_MARK}
                    | ({"carries_out": grant.request_id} if grant else {})
                    | ({"told_denials": [d.data["request_id"] for d in told]} if told else {})
                    | (origin or {}),
                ).stamped(session_id=self.session_id, harness=name, cell=cell)
            )
        except BaseException:
            self._end_turn_lock()  # no turn started: nothing to end
            raise
        self.turn = start.turn
        activity = self._activity[name] = TurnActivity(self.redactor.stream())
        yield start
        try:
            async for event in self._run_turn(prompt, name, cell, handoff, activity, told):
                yield event
        except Exception:
            self._end_turn_lock()  # a failure the turn could not store: do not hold the session
            raise
        except BaseException:  # cancelled: `stop_turn` stores its end and frees the session
            if name in self._activity:
                self._cancelled_turn = name
            with contextlib.suppress(StoreUnavailableError):  # stored now, shown by the stop
                self._unshown = self._release_held()
            raise

    async def _run_turn(
        self,
        prompt: str,
        name: str,
        cell: str,
        handoff: bool,
        activity: TurnActivity,
        told: list[Event],
    ) -> AsyncIterator[Event]:
        """The turn `run_prompt` started, up to its stored end."""
        started = time.monotonic()
        await self._warmed(name)
        try:
            agent = self._harness(name)
            if agent.ctx.model != self.models.get(name):
                await agent.change_model(self.models.get(name))
            wanted = (self.sandbox, self.allow_hosts, self.readable, self.broker_setup())
            if (
                agent.ctx.sandbox,
                agent.ctx.allow_hosts,
                agent.ctx.readable,
                agent.ctx.broker,
            ) != wanted:
                (
                    agent.ctx.sandbox,
                    agent.ctx.allow_hosts,
                    agent.ctx.readable,
                    agent.ctx.broker,
                ) = wanted
                await agent.close()  # restarts inside the new sandbox, resuming its conversation
        except HarnessError as exc:
            self._activity.pop(name, None)
            yield self._record(ev.error(str(exc)), name, cell)
            yield self._record(Event(EventKind.TURN_END, {"status": "error"}), name, cell)
            return
        if self.first_notice:
            yield self._record(ev.notice(self.first_notice), name, cell)
            self.first_notice = None
        if name not in self._versions_checked:
            self._versions_checked.add(name)
            if warning := await version_warning(type(agent), agent.ctx.binary):
                yield self._record(ev.notice(warning), name, cell)
        if agent.ctx.upstream.offline:
            yield self._record(
                ev.notice(
                    "Offline rehearsal model: no model credentials are configured, so a "
                    "scripted model answers. Set ANTHROPIC_API_KEY / OPENAI_API_KEY / "
                    "GEMINI_API_KEY (or a "
                    "base URL for a compatible gateway) before starting the kernel, or use "
                    "your plan: for Claude, "
                    + HOW_TO_LOG_IN["claude"]
                    + "; for Codex, "
                    + HOW_TO_LOG_IN["chatgpt"]
                    + ". Then restart the kernel."
                ),
                name,
                cell,
            )
        if self.sandbox == "off":
            yield self._record(
                ev.notice(
                    "⚠ SANDBOX OFF: the agent runs with your own permissions: it can read your "
                    "files, secrets included, and reach the network. `%sandbox auto` turns the "
                    "sandbox back on."
                ),
                name,
                cell,
            )
        if told:
            requests = {
                str(e.data.get("request_id")): e
                for e in self.store.events(self.session_id, kinds=(EventKind.APPROVAL_REQUEST,))
            }
            note = denial_note(told, requests)
            yield self._record(
                Event(
                    EventKind.NOTICE,
                    {
                        "message": f"Told {name} of {len(told)} denial(s) given after the restart.",
                        "details": note,
                    },
                ),
                name,
                cell,
            )
            prompt = f"{note}\n\n{prompt}"
        if handoff:
            # A CLI that comes up without the conversation (a restart it cannot resume)
            # is handed all of it, its own earlier turns included. Only the turns it missed
            # are read: a long session's earlier streams are not parsed again at each turn.
            since = self._last_turn_of.get(name, 0) if agent.remembers() else 0
            earlier = (
                e
                for e in self.store.events(self.session_id, after_turn=since)
                if e.turn < self.turn
            )
            if (carried := build_handoff(earlier, name, since=since)) is not None:
                yield self._record(
                    Event(
                        EventKind.NOTICE,
                        {
                            "message": f"Handed over to {name}: {carried.summary}.",
                            "details": carried.text,
                        },
                    ),
                    name,
                    cell,
                )
                prompt = f"{carried.text}\n\n{prompt}"
        self._last_turn_of[name] = self.turn
        self.gateway.set_context(self.session_id, cell)
        # Pauses at model calls are asked from the gateway's thread, shown in this cell.
        self._loop, self._cell_context = asyncio.get_running_loop(), contextvars.copy_context()
        self._current_cell = cell
        reported_cost: float | None = None
        try:
            async for event in agent.run_turn(prompt):
                if event.kind == EventKind.TEXT:  # the hot path: see `_held_ready`
                    if shown := activity.text.feed(str(event.data.get("text", ""))):
                        self._hold(event, name, cell, {**event.data, "text": shown})
                    for recorded in self._held_ready(agent):
                        yield recorded
                    # A model call's spend is recorded before the next event that is not
                    # text: the gateway meters a call as its stream ends, while the CLI may
                    # still be printing that answer, and a spend line between two deltas
                    # would split one answer's text in two on the share page and in exports.
                    continue
                for recorded in self._release_held():
                    yield recorded
                if event.kind == EventKind.USAGE and agent.ctx.upstream.offline:
                    event = rehearsal_usage(event, agent.ctx.upstream.price_as)
                if event.kind == EventKind.USAGE:
                    reported_cost = event.data.get("cost_usd")
                if event.kind == EventKind.TURN_END:
                    for spend in await self._settle_spend(name, cell):
                        yield spend
                    if event.data.get("status") == "completed" and not agent.ctx.upstream.offline:
                        self._cross_check(name, reported_cost)
                    event = event.stamped(
                        data={
                            **event.data,
                            "duration_s": round(time.monotonic() - started, 3),
                            "sandbox": agent.sandbox_backend,
                            **({"session_spend": line} if (line := self.spend_line()) else {}),
                        }
                    )
                for spend in self._drain_spend(name, cell):
                    yield spend
                if event.kind == EventKind.TURN_END and (refused := self.take_refusals(name)):
                    yield self._record(ev.notice(refusal_notice(refused)), name, cell)
                activity.see(event)
                if event.kind == EventKind.TURN_END:
                    self._activity.pop(name, None)
                for recorded in self._record_streamed(activity.text, event, name, cell):
                    yield recorded
                if event.kind == EventKind.TOOL_RESULT and agent.sandbox_backend != "off":
                    if why := explain_refusal(str(event.data.get("output", ""))):
                        yield self._record(ev.notice(why), name, cell)
                    call_id = str(event.data.get("call_id", ""))
                    if refused := self.take_refusals(name, call_id):
                        yield self._record(ev.notice(refusal_notice(refused)), name, cell)
        except HarnessError as exc:
            self._activity.pop(name, None)
            for recorded in self._release_held():
                yield recorded
            for held in self._record_streamed(activity.text, None, name, cell):
                yield held
            yield self._record(ev.error(str(exc)), name, cell)
            yield self._record(Event(EventKind.TURN_END, {"status": "error"}), name, cell)
            return
        for recorded in self._release_held():  # a harness that ended without a turn_end
            yield recorded

    def _record_streamed(
        self, text: TextStream, event: Event | None, harness: str, cell: str
    ) -> list[Event]:
        """Record a turn's event, its text deltas through the turn's `TextStream`: a delta's
        tail that may begin a credential waits for the next delta, and is recorded (redacted
        if it was one) before the next event of another kind, or with None (the turn ends)."""
        if event is not None and event.kind == EventKind.TEXT:
            shown = text.feed(str(event.data.get("text", "")))
            return (
                [self._record(event.stamped(data={**event.data, "text": shown}), harness, cell)]
                if shown
                else []
            )
        held = text.flush()
        out = [self._record(ev.text(held), harness, cell)] if held else []
        return out + ([self._record(event, harness, cell)] if event is not None else [])

    async def stop_turn(self, harness: str | None = None, cell: str = "") -> list[Event]:
        """End the running turn of `harness` (after its consumer was cancelled): the harness
        stops it its own way, then by force (see `JsonLinesHarness.interrupt`). The turn is
        stored as ended once, marked interrupted, saying what was stopped."""
        name = harness or self.current
        started = time.monotonic()
        self._cancelled_turn = None
        activity = self._activity.pop(name, None)
        agent = self._harnesses.get(name)
        if activity is None:
            # The turn ended before the stop came (its end raced the cancel): it is stored as
            # it ended, and the CLI is left alone, since an interrupt it gets between turns is
            # never answered with a turn's end and would hold up the next prompt.
            return await self._settle_spend(name, cell, STOP_SETTLE_S)
        drained = await agent.interrupt() if agent else []
        recorded = self._release_held() + [
            e
            for event in [*drained, None]
            for e in self._record_streamed(activity.text, event, name, cell)
        ]
        recorded += await self._settle_spend(name, cell, STOP_SETTLE_S)
        end = {
            "status": "interrupted",
            "stopped": activity.describe(),
            "stop_s": round(time.monotonic() - started, 3),
            "sandbox": agent.sandbox_backend if agent else "",
        }
        recorded.append(self._record(Event(EventKind.TURN_END, end), name, cell))
        return recorded

    def turn_running(self, harness: str) -> bool:
        """Whether a turn of `harness` is open in this kernel."""
        return harness in self._activity

    async def abandon_turn(self, harness: str | None = None) -> None:
        """Stop the running turn without storing anything more (the store refused a write):
        the harness process stops; the next prompt starts it again, resuming."""
        name = harness or self.current
        self._activity.pop(name, None)
        self._held, self._unshown = [], []  # none of it shown: the store refused to take it
        self._end_turn_lock()
        if (agent := self._harnesses.pop(name, None)) is not None:
            try:
                await agent.interrupt()
            finally:
                await agent.close()

    def turns(self) -> list[TurnSummary]:
        """One summary row per turn of this session, oldest first (for `%history`)."""
        rows: dict[int, TurnSummary] = {}
        for event in self.store.events(self.session_id):
            row = rows.setdefault(
                event.turn,
                {
                    "turn": event.turn,
                    "harness": event.harness,
                    "prompt": "",
                    "tools": 0,
                    "status": "running",
                    "tokens": 0,
                    "cost_usd": None,
                    "cell": event.cell,
                    "by": "",
                    "decided_by": [],
                },
            )
            if event.kind == EventKind.TURN_START:
                row["prompt"] = event.data.get("prompt", "")
                row["by"] = str(event.data.get("by", ""))
            elif event.kind == EventKind.APPROVAL_DECISION:
                who = str(event.data.get("by", ""))
                if who and who not in row["decided_by"]:
                    row["decided_by"].append(who)
            elif event.kind == EventKind.TOOL_CALL:
                row["tools"] += 1
            elif event.kind == EventKind.USAGE:
                row["tokens"] = event.data.get("input_tokens", 0) + event.data.get(
                    "output_tokens", 0
                )
                row["cost_usd"] = event.data.get("cost_usd")
                row["rehearsal"] = bool(event.data.get("rehearsal"))
            elif event.kind == EventKind.TURN_END:
                row["status"] = event.data.get("status", "")
        return [rows[k] for k in sorted(rows)]


class TurnSummary(TypedDict):
    """One turn in `%history`: what was asked, of which harness, and what came of it."""

    turn: int
    harness: str
    prompt: str
    tools: int
    status: str
    tokens: int
    #: None until the turn's usage is stored, and when its model has no price.
    cost_usd: float | None
    cell: str
    #: Who sent the prompt when it was not the notebook's owner in a cell: a co-driver's hub
    #: name (or link role) from the share page; "" for the owner.
    by: str
    #: Who answered the turn's approvals (a person, or ``auto-approve``/the policy).
    decided_by: list[str]
    #: Present once the turn's usage is stored: the offline rehearsal model answered it.
    rehearsal: NotRequired[bool]


class TurnActivity:
    """What a running turn is doing, from its events: deciding an approval, running a tool,
    or waiting on the model (so a stop can say what it stopped)."""

    def __init__(self, text: TextStream):
        self.tools: dict[str, dict[str, Any]] = {}  # call id -> the tool call's data
        self.approval: dict[str, Any] | None = None
        #: The answer's text deltas, redacted as one text (see `AgentSession._record_streamed`).
        self.text = text

    def see(self, event: Event) -> None:
        data = event.data
        if event.kind == EventKind.TOOL_CALL:
            self.tools[data.get("call_id", "")] = data
        elif event.kind == EventKind.TOOL_RESULT:
            self.tools.pop(data.get("call_id", ""), None)
        elif event.kind == EventKind.APPROVAL_REQUEST:
            self.approval = data
        elif event.kind == EventKind.APPROVAL_DECISION:
            self.approval = None

    def describe(self) -> str:
        if self.approval is not None:
            return f"the approval request for {self.approval.get('tool', 'a tool')} " + (
                f"`{self.approval.get('summary', '')}`"
            )
        if self.tools:
            call = list(self.tools.values())[-1]
            what = "the command" if call.get("action") == "exec" else f"the {call.get('tool')} call"
            return f"{what} `{call.get('summary', '')}`"
        return "the model call"


async def version_warning(cls: type[Harness], binary: str | None) -> str | None:
    """A warning when the CLI is not the version omnikernel is tested with (it still runs)."""
    pinned = getattr(cls, "pinned_version", "")
    if not pinned or hasattr(cls, "agent"):  # ACP agents have no common `--version`
        return None
    # The npm package's manifest when the CLI is in one: running `--version` costs a CLI's
    # start (pi: 1.5-3 s of node loading its bundle), which the first prompt would wait for.
    if (packaged := cls.package_version(binary)) is not None:
        where, version = packaged
    else:
        info = await asyncio.to_thread(cls.probe, binary)
        if not info.installed:
            return None
        where, version = info.binary, info.version
    if pinned in version.split() or version.startswith(pinned):
        return None
    found = version or "an unknown version (`--version` said nothing)"
    return (
        f"⚠ {cls.display_name} at {where} is {found}; omnikernel is tested with "
        f"{pinned}. It runs anyway, but its protocol may differ: install the tested one "
        f"with `{cls.install_command()}` (or `make harness-clis`)."
    )


def kernel_alive(mark: str) -> bool:
    """Whether the kernel that wrote `mark` still runs (on this host; elsewhere: assume so)."""
    host, _, pid = mark.rpartition(":")
    if not host or not pid.isdigit():
        return False  # written before kernels noted themselves: nobody can still run it
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():
        return False  # this kernel has no turn running before its first one
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
