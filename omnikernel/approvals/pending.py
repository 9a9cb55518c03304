"""Pending approvals: asks waiting for a person, answerable from anywhere, first answer wins.

An ask is an asyncio future on the kernel's loop. Its request is already in the store when it
is shown (the session records events before anyone sees them); presenters (the approval card
in the cell, later the share page) show it and call `PendingApprovals.answer` from any thread.
The first answer resolves the future and is recorded, with who answered and from where; a later
answer is told who was first. Nobody answering within the timeout is a deny. An ask whose
asker died with its kernel is shown again by the next kernel (`reopen`): nobody awaits it, and it
waits, with no timeout, for its first answer (see `omnikernel.approvals.after_restart`).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

from omnikernel.approvals.decide import Decision, unanswered
from omnikernel.events import Event, EventKind

log = logging.getLogger(__name__)

#: Seconds an ask waits for an answer before it is denied.
DEFAULT_TIMEOUT_S = 600.0
SCOPES = ("once", "session", "always")


@dataclasses.dataclass
class Pending:
    """One ask: what is asked, why, and (once answered) the decision."""

    request_id: str
    request: dict[str, Any]
    asked: Decision
    future: asyncio.Future[Decision]
    loop: asyncio.AbstractEventLoop
    #: Called (on the kernel's loop) with the decision once it is made.
    on_decided: list[Callable[[Decision], object]] = dataclasses.field(default_factory=list)
    decision: Decision | None = None
    #: The context of the cell that asked: what the callbacks display goes to that cell.
    context: contextvars.Context = dataclasses.field(default_factory=contextvars.copy_context)

    @property
    def is_pause(self) -> bool:
        return self.asked.verdict == "pause"


class PendingApprovals:
    """Every unanswered ask of one session."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._pending: dict[str, Pending] = {}
        self._done: dict[str, Decision] = {}
        self._lock = threading.Lock()
        #: Called with each new `Pending` before its answer is awaited (the approval card).
        self.presenters: list[Callable[[Pending], None]] = []

    def pending(self) -> list[Pending]:
        with self._lock:
            return list(self._pending.values())

    async def ask(self, request_id: str, request: dict[str, Any], asked: Decision) -> Decision:
        """Show the ask and wait for its first answer (or the timeout)."""
        loop = asyncio.get_running_loop()
        pending = Pending(request_id, request, asked, loop.create_future(), loop)
        with self._lock:
            self._pending[request_id] = pending
        try:
            for present in self.presenters:
                present(pending)
            try:
                async with asyncio.timeout(self.timeout_s):
                    decision = await asyncio.shield(pending.future)
            except asyncio.CancelledError:  # the turn was stopped: the card says so
                self._resolve(
                    pending,
                    Decision(
                        "deny",
                        "the turn was stopped before anyone answered",
                        "interrupt",
                        asked.rules,
                        source="interrupt",
                    ),
                )
                raise
            except TimeoutError:
                request_event = Event(EventKind.APPROVAL_REQUEST, pending.request)
                decision = unanswered(request_event, asked, self.timeout_s)
                if not self._resolve(pending, decision):
                    assert pending.decision is not None
                    decision = pending.decision  # an answer won the race against the clock
            return decision
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    def reopen(
        self,
        request_id: str,
        request: dict[str, Any],
        asked: Decision,
        *,
        on_decided: Callable[[Decision], object],
    ) -> Pending | None:
        """Show again an ask whose asker is gone (a kernel restart cut its turn, see
        `omnikernel.approvals.after_restart`). Nobody awaits it: it waits, with no timeout, for its first
        answer, which `on_decided` acts on. None if it is shown already."""
        loop = asyncio.get_running_loop()
        pending = Pending(request_id, request, asked, loop.create_future(), loop)
        with self._lock:
            if request_id in self._pending or request_id in self._done:
                return None
            self._pending[request_id] = pending

        def forget(_decision: Decision) -> None:
            with self._lock:
                self._pending.pop(request_id, None)

        pending.on_decided += [forget, on_decided]
        for present in self.presenters:
            present(pending)
        return pending

    def answer(
        self,
        request_id: str,
        allow: bool,
        *,
        by: str,
        source: str,
        scope: str = "once",
        reason: str = "",
    ) -> str:
        """Answer an ask from any thread. Returns what happened, for the one who answered:
        "accepted", or why not (already decided, and by whom; unknown request)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        with self._lock:
            pending = self._pending.get(request_id)
            done = self._done.get(request_id)
        if pending is None:
            if done is not None:
                return too_late(done)
            return f"no pending approval {request_id!r}"
        asked = pending.asked
        verb = "approved" if allow else "denied"
        decision = Decision(
            "allow" if allow else "deny",
            f"{verb} by {by} ({source}"
            + (f", {scope}" if scope != "once" else "")
            + ")"
            + (f": {reason}" if reason else ""),
            by,
            asked.rules,
            source=source,
            scope=scope if allow else "once",
            subject=asked.subject,
        )
        if self._resolve(pending, decision):
            return "accepted"
        first = pending.decision
        assert first is not None
        return too_late(first)

    def _resolve(self, pending: Pending, decision: Decision) -> bool:
        """First answer wins: True if `decision` is the one."""
        with self._lock:
            if pending.decision is not None:
                return False
            pending.decision = decision
            self._done[pending.request_id] = decision

        def settle() -> None:
            if not pending.future.done():
                pending.future.set_result(decision)
            for callback in pending.on_decided:
                callback(decision)

        if _on_loop(pending.loop):
            pending.context.run(settle)
        else:
            pending.loop.call_soon_threadsafe(settle, context=pending.context)
        return True


def too_late(first: Decision) -> str:
    verb = "approved" if first.allow else "denied"
    return f"too late: already {verb} by {first.by} ({first.source})"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
