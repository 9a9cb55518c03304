"""How much a share server lets clients try and hold: wrong codes and catch-ups.

Wrong codes are counted per client address *and* in total: the address limit stops one guesser,
the global one a guesser that rotates through addresses (all of 127.0.0.0/8 is one machine's
loopback). Codes are 256 random bits, so guessing is hopeless anyway; the caps keep it visibly
so and cheap. While the global cap is reached every join waits (grants already given go on).

Catch-ups (a viewer's history, sent when its WebSocket opens) are the costly thing a viewer can
ask for: at most `CATCH_UPS_PER_LINK` at a time per link, so one link's reconnect storm cannot
hold the rest; `CATCH_UPS_AT_ONCE` in all, the others wait their turn.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

FAILURES_ALLOWED = 5
GLOBAL_FAILURES_ALLOWED = 30
FAILURE_WINDOW_S = 60.0
CATCH_UPS_PER_LINK = 2
CATCH_UPS_AT_ONCE = 4


class Window:
    """Timestamps of recent failures within `span_s`."""

    def __init__(self, span_s: float, clock: Callable[[], float]):
        self.span_s = span_s
        self.clock = clock
        self.times: collections.deque[float] = collections.deque()

    def count(self) -> int:
        now = self.clock()
        while self.times and now - self.times[0] > self.span_s:
            self.times.popleft()
        return len(self.times)

    def add(self) -> None:
        self.times.append(self.clock())


class WrongCodes:
    """Wrong, revoked or expired codes seen, per address and in all."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.by_client: dict[str, Window] = {}
        self.everyone = Window(FAILURE_WINDOW_S, clock)

    def refusal(self, client: str) -> str | None:
        """Why `client` may not try a code now, or None."""
        window = self.by_client.get(client)
        if window is not None and window.count() >= FAILURES_ALLOWED:
            return "too many wrong codes from your address; wait a minute"
        if self.everyone.count() >= GLOBAL_FAILURES_ALLOWED:
            return "too many wrong codes were tried; wait a minute"
        if window is not None and not window.times:
            del self.by_client[client]  # forget idle addresses: the map stays small
        return None

    def failed(self, client: str) -> None:
        self.by_client.setdefault(client, Window(FAILURE_WINDOW_S, self.clock)).add()
        self.everyone.add()


class CatchUps:
    """Who may send a history now (see the module docstring)."""

    def __init__(self) -> None:
        self.running: collections.Counter[str] = collections.Counter()
        self.slots = asyncio.Semaphore(CATCH_UPS_AT_ONCE)

    def may_start(self, link: str) -> bool:
        return self.running[link] < CATCH_UPS_PER_LINK

    def started(self, link: str) -> None:
        self.running[link] += 1

    def ended(self, link: str) -> None:
        self.running[link] -= 1
        if self.running[link] <= 0:
            del self.running[link]
