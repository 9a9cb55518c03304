"""Co-drivers' prompts: a prompt sent from the share page runs as a turn of the notebook's
session and shows in the notebook, in the session feed that ``%share`` puts there.

The share server is another process, so a prompt reaches the kernel through the store
(`omnikernel.store.shares`): the page queues it, a kernel that shows the session's feed takes
it. A kernel takes one only between its own turns (cells and co-drivers share one turn at a
time, `OmniKernel.turns`), so a co-driver never cuts into a running cell, and the cell that
comes while a co-driver's turn runs waits for it.

The prompt goes to the agent as it is: never through IPython (no magics, no ``!``), never
filled with the notebook's Python values (``{var}``): the co-driver is not the notebook's owner
and must not reach its namespace. Its approvals, pauses, policies and spend are the session's,
as for any cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omnikernel.kernel.widgets import SessionFeed
    from omnikernel.store.shares import ShareCodes, SharedPrompt

log = logging.getLogger(__name__)

#: How often an idle kernel looks for a queued prompt.
POLL_S = 0.2


class CoDriving:
    """Takes the session's queued prompts while a feed is shown, one at a time, and has them
    run (`run`) when the kernel is not busy with a turn of its own (`busy`)."""

    def __init__(
        self,
        codes: Callable[[], ShareCodes],
        session_id: Callable[[], str],
        run: Callable[[SharedPrompt, SessionFeed], Awaitable[None]],
        busy: Callable[[], bool],
    ):
        self._codes, self._session_id, self._run, self._busy = codes, session_id, run, busy
        self.feed: SessionFeed | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._registered: str | None = None

    @property
    def taking(self) -> bool:
        return self._task is not None and not self._task.done()

    def show(self, feed: SessionFeed) -> None:
        """From now on co-drivers' turns show in `feed` (the newest feed shown wins)."""
        self.feed = feed
        if not self.taking:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            try:
                if await self._take_one():
                    continue  # another may be queued behind it
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked store, a failed turn: say so, keep serving
                log.exception("co-driving: a queued prompt could not be run")
            await asyncio.sleep(POLL_S)

    async def _take_one(self) -> bool:
        codes, session_id = self._codes(), self._session_id()
        if session_id != self._registered:  # a new session (`%session`, a fork): follow it
            if self._registered is not None:
                codes.feed_closed(self._registered)
            codes.feed_opened(session_id)
            self._registered = session_id
        if self._busy() or self.feed is None:
            return False
        prompt = await asyncio.to_thread(codes.take_prompt, session_id)
        if prompt is None:
            return False
        await self._run(prompt, self.feed)
        return True

    def close(self) -> None:
        """Stop taking prompts (the kernel shuts down; from any thread): the page says so from
        now on."""
        if self._task is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed already
                self._loop.call_soon_threadsafe(self._task.cancel)
            self._task = None
        if self._registered is not None:
            with contextlib.suppress(Exception):
                self._codes().feed_closed()
            self._registered = None
