"""One session's live feed: each event rendered once for every viewer, a turn's streamed text
as one block, histories sent in slices.

Why it exists: rendering (Markdown through the sanitiser) is what a viewer costs, and a viewer
reconnecting from the start of a long session must neither render that session again nor hold
the event loop while its history goes out (eight reconnects to a 1,500-event session once
stalled every other request for seconds). So the feed renders each event once, when it first
reads it, keeps the rendered messages in order, and a catch-up sends them in slices, awaiting
each write, so other viewers and requests are served in between.

Text streams as many small ``text`` events. The page shows a run of them (one answer, up to the
next tool call or other event) as one Markdown block, as the cell does: the feed keeps one
message per run, ``block`` = the seq of the run's first event, re-rendered as the run grows, with
the seq of its latest event; a viewer replaces the block it has. Only the last message can grow,
so the messages stay ordered by seq and a reconnect from any seq gets exactly what changed.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from jupyter_ext.share.render import OwnerPaths, event_message, text_block_html
from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore

#: Messages sent per catch-up frame: a long history is many frames, each a short step.
CATCH_UP_BATCH = 200
#: Events rendered per loop step when a feed first reads a long session.
RENDER_BATCH = 200


class Feed:
    """The rendered messages of one session and the sockets that follow it live."""

    def __init__(self, session_id: str, store: SessionStore, paths: OwnerPaths):
        self.session_id = session_id
        self.store = store
        self.paths = paths
        #: Rendered messages in seq order; `seqs` holds their seqs, for bisecting.
        self.messages: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        #: The last event read from the store.
        self.last = 0
        self.sockets: set[Any] = set()
        self.catching_up = 0
        self.idle_since = time.monotonic()
        self._run_text: list[str] = []  # the open text run's parts, when the last message is one
        self._text_grew = False
        self._loading: asyncio.Task[None] | None = None

    # -- reading and rendering ------------------------------------------------------------------

    async def loaded(self) -> None:
        """Read and render the session so far, once, a slice per loop step."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        events = list(self.store.events(self.session_id, since=self.last))
        for start in range(0, len(events), RENDER_BATCH):
            self._take(events[start : start + RENDER_BATCH])
            await asyncio.sleep(0)

    def advance(self) -> list[dict[str, Any]]:
        """Read what the store got since the last call; the messages new or changed by it."""
        if self._loading is None or not self._loading.done():
            return []  # the load reads them
        return self._take(list(self.store.events(self.session_id, since=self.last)))

    def _take(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        changed: dict[int, dict[str, Any]] = {}  # by block or seq: a growing block once
        for event in events:
            self.last = event.seq
            if event.kind == EventKind.TEXT:
                message = self._grow_text(event)
            else:
                message = event_message(event, self.paths)
                if not message["html"] and message["kind"] not in KINDS_WITHOUT_HTML:
                    continue  # nothing a viewer would see (a usage report)
                self._close_text()
                self.messages.append(message)
                self.seqs.append(message["seq"])
            changed[message.get("block", message["seq"])] = message
        self._render_text()  # a growing block is rendered once per read, not once per part
        return list(changed.values())

    def _grow_text(self, event: Event) -> dict[str, Any]:
        text = self.paths.shorten(str(event.data.get("text", "")))
        last = self.messages[-1] if self.messages else None
        if self._run_text and last is not None and last["turn"] == event.turn:
            self._run_text.append(text)
            self._text_grew = True
            last["seq"] = self.seqs[-1] = event.seq
            return last
        self._close_text()
        self._run_text, self._text_grew = [text], True
        message = {
            "seq": event.seq,
            "kind": "text",
            "turn": event.turn,
            "block": event.seq,
            "html": "",
        }
        self.messages.append(message)
        self.seqs.append(event.seq)
        return message

    def _render_text(self) -> None:
        if self._run_text and self._text_grew:
            self.messages[-1]["html"] = text_block_html("".join(self._run_text))
            self._text_grew = False

    def _close_text(self) -> None:
        self._render_text()
        self._run_text = []

    # -- viewers --------------------------------------------------------------------------------

    async def catch_up(self, since: int, send: Callable[[str], Awaitable[None]]) -> None:
        """Send everything after `since`, a frame at a time, then return with nothing left
        unsent: the caller adds the socket to `sockets` in the same step of the loop, so no
        message is missed or sent twice. Each write is awaited: a slow reader slows only its
        own catch-up, and the loop serves others between frames."""
        self.catching_up += 1
        try:
            while (start := bisect.bisect_right(self.seqs, since)) < len(self.messages):
                batch = self.messages[start : start + CATCH_UP_BATCH]
                frame = json.dumps({"events": batch})
                since = batch[-1]["seq"]
                await send(frame)
        finally:
            self.catching_up -= 1
            self.idle_since = time.monotonic()

    def deliver(self, messages: list[dict[str, Any]]) -> None:
        if not messages or not self.sockets:
            return
        frame = json.dumps({"events": messages})
        for sock in list(self.sockets):
            sock.send_raw(frame)

    def unused_for(self) -> float:
        """Seconds since the last viewer left (0 while anyone follows or catches up)."""
        if self.sockets or self.catching_up:
            self.idle_since = time.monotonic()
            return 0.0
        return time.monotonic() - self.idle_since


#: Kinds the page needs even without HTML of their own (the spend gauge reads ``spend``).
KINDS_WITHOUT_HTML = {EventKind.SPEND.value}
