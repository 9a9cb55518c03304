"""What a session spends: the metered model calls, the budget, and the gauge's figures.

The gateway meters each model call on its own thread (`_on_spend`); the record waits in a
queue until the running turn stores it as a ``spend`` event, so spend is durable in the store
like every other event, and the ledger and budget survive a kernel restart (the ledger is
read back from the stored ``spend`` events). At a turn's end the turn waits a little for the
gateway to meter its last call (`SETTLE_S`, `STOP_SETTLE_S` for a stopped turn). Rehearsal
turns cost nothing, and say so.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from omnikernel.events import Event, EventKind
from omnikernel.gateway import (
    Budget,
    PriceTable,
    SpendLedger,
    SpendRecord,
    UsageLimits,
    cross_check,
)
from omnikernel.policy.rules import PauseEvery

if TYPE_CHECKING:
    from omnikernel.gateway import Gateway
    from omnikernel.policy import PolicyState
    from omnikernel.policy.rule import Rule
    from omnikernel.store.sessions import SessionStore

#: How long a finished turn waits for the gateway to meter its last model call.
SETTLE_S = 3.0
#: The same wait for a stopped turn, which must leave the cell idle within a second; what the
#: gateway meters later is stored with the next turn.
STOP_SETTLE_S = 0.2

log = logging.getLogger(__name__)


class SessionSpend:
    """The spend part of `AgentSession` (a mixin: its state is set by `_init_spend`; the names
    annotated below belong to the other parts)."""

    store: SessionStore
    session_id: str
    turn: int
    _gateway: Gateway | None
    _loop: asyncio.AbstractEventLoop | None

    if TYPE_CHECKING:

        @property
        def gateway(self) -> Gateway: ...

        def live_state(self) -> PolicyState: ...

        def rules(self) -> list[Rule]: ...

        def _record(self, event: Event, harness: str, cell: str) -> Event: ...

    def _init_spend(
        self,
        budget_usd: float | None,
        budget_tokens: int | None,
        price_overrides: Mapping[str, Mapping[str, float]] | None,
    ) -> None:
        # Spend lives in the store, so totals and the budget survive a kernel restart.
        self.ledger = self._stored_spend()
        self.budget = Budget(budget_usd, budget_tokens)
        self.prices = PriceTable.load(overrides=price_overrides)
        self._spent: queue.SimpleQueue[SpendRecord] = queue.SimpleQueue()
        #: Called on the kernel's loop with each metered call (the spend gauge).
        self.spend_listeners: list[Callable[[SpendRecord], object]] = []

    def _stored_spend(self) -> SpendLedger:
        return SpendLedger(
            SpendRecord.from_dict(e.data)
            for e in self.store.events(self.session_id, kinds=(EventKind.SPEND,))
        )

    def usage_limits(self) -> dict[str, UsageLimits]:
        """The usage limits each upstream last reported (a plan's windows, a key's rate
        limits), by upstream."""
        return self._gateway.latest_limits() if self._gateway is not None else {}

    @property
    def spent_tokens(self) -> int:
        """Tokens metered this session, as a token budget counts them."""
        return self._gateway.spent_tokens if self._gateway is not None else self.ledger.total_tokens

    def spend_line(self) -> str:
        """The session's spend against its budget and pauses, in each unit one is set in
        ("" when none is): for the cell's footer. Rehearsal calls spend nothing: say so."""
        state = self.live_state()
        parts = []
        for cap in self.budget.limits():
            spent = cap.spent_text(cap.of(state.spent_usd, state.spent_tokens))
            if not cap.is_tokens and self.ledger.only_rehearsal:
                spent = "$0 (rehearsal)"  # the offline model's calls spend nothing
            parts.append(f"session {spent} of {cap.show()} budget")
        for rule in self.rules():
            if isinstance(rule, PauseEvery):
                every = rule.amount
                parts.append(f"next pause at {every.show(rule.next_pause(state))}")
        return " · ".join(parts)

    def _on_spend(self, record: SpendRecord) -> None:
        """Called on the gateway's thread as each model call is metered."""
        self._spent.put(record)
        loop = self._loop
        for listener in list(self.spend_listeners):
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(listener, record)
            else:
                listener(record)

    def _drain_spend(self, name: str, cell: str) -> list[Event]:
        """Store what the gateway metered since the last event, as ``spend`` events."""
        out: list[Event] = []
        while True:
            try:
                record = self._spent.get_nowait()
            except queue.Empty:
                return out
            out.append(self._record(Event(EventKind.SPEND, record.to_dict()), record.harness, cell))

    async def _settle_spend(self, name: str, cell: str, within: float = SETTLE_S) -> list[Event]:
        """At a turn's end, wait for the gateway to finish metering its last call."""
        deadline = time.monotonic() + within
        # The gateway runs on its own thread and loop: polling its counter is the simple way.
        while self.gateway.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return self._drain_spend(name, cell)

    def _cross_check(self, name: str, reported: float | None) -> None:
        """Log when the harness's own cost disagrees with the gateway's by more than 1%."""
        spends = [
            e for e in self.store.events(self.session_id, kinds=(EventKind.SPEND,), turn=self.turn)
        ]
        if reported is None or not spends or any(e.data.get("cost_usd") is None for e in spends):
            return
        metered = sum(e.data["cost_usd"] for e in spends)
        if not cross_check(metered, reported):
            log.warning(
                "%s reported $%.6f for turn %d, the gateway metered $%.6f",
                name,
                reported,
                self.turn,
                metered,
            )


def rehearsal_usage(event: Event, priced_as: str = "") -> Event:
    """A rehearsal turn's own usage report, without its price: a CLI prices the tokens from
    its own table (Claude Code's ``total_cost_usd``) as if a real model had answered, but
    nothing was spent, so it is $0. When the scenario prices calls on purpose (`priced_as`),
    only the gateway's meter knows that price: the harness's figure is dropped (None)."""
    data = {**event.data, "rehearsal": True, "cost_usd": None if priced_as else 0.0}
    return event.stamped(data=data)
