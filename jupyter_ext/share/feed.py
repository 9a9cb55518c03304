"""One session's live feed: each event rendered and serialised once for every viewer, a turn's
streamed text as one block, histories sent in slices.

Why it exists: rendering (Markdown through the sanitiser) is what a viewer costs, and a viewer
reconnecting from the start of a long session must neither render that session again nor hold
the event loop while its history goes out (eight reconnects to a 1,500-event session once
stalled every other request for seconds). So the feed renders each event once, when it first
reads it, and serialises each message to JSON once, when it is rendered; it keeps both in order.
A catch-up joins serialised messages into frames, a slice at a time, awaiting each write, so
other viewers and requests are served in between.

Fan-out costs one WebSocket frame, not one per viewer: `deliver` builds the frame's bytes once
(`Frame`: RFC 6455 header and UTF-8 payload; the server's frames are never masked, and the share
sockets never negotiate per-message compression, which would make each viewer's bytes its own)
and each following socket writes those same bytes to its stream (`FrameWriter`): no per-viewer
encoding, framing or task, one ``send`` each. A viewer that stops reading is closed once
`MAX_BUFFERED_BYTES` wait for it (the page reconnects and catches up from what it has), so no
reader holds the server's memory.

Reading is sliced too: new events (a burst of thousands, or a session's whole history when
the first viewer opens it) are read, rendered and delivered in slices of at most `SLICE_S` of
work, each its own step of the loop, so a long read never stalls the other viewers.

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
import math
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from tornado import iostream, websocket

from jupyter_ext.share.render import OwnerPaths, event_message, text_block_html
from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore

#: Messages sent per catch-up frame: a long history is many frames, each a short step.
CATCH_UP_BATCH = 200
#: Work (reading and rendering events) done in one step of the loop before the others' turn.
SLICE_S = 0.005
#: Bytes a viewer may leave unread before the server closes its socket (it reconnects).
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
#: The close code for a viewer too far behind (not 4403: the page reconnects).
BEHIND_CLOSE = 4408


class Frame:
    """One message to every viewer: its text (JSON) and its WebSocket frame, built once."""

    __slots__ = ("text", "wire")

    def __init__(self, text: str):
        self.text = text
        payload = text.encode()
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x81, size)  # FIN + text; unmasked (server to client)
        elif size <= 0xFFFF:
            head = struct.pack("!BBH", 0x81, 126, size)
        else:
            head = struct.pack("!BBQ", 0x81, 127, size)
        self.wire = head + payload

    @staticmethod
    def text_of(encoded: Iterable[str]) -> str:
        """The page's message holding messages serialised by the feed (`Feed.encoded`)."""
        return '{"events":[' + ",".join(encoded) + "]}"

    @classmethod
    def of(cls, encoded: Iterable[str]) -> Frame:
        """The frame of messages serialised by the feed."""
        return cls(cls.text_of(encoded))


class FrameWriter(websocket.WebSocketHandler):
    """The share page's sockets (the share server's and the one under a hub user's server):
    no compression, and a frame built once written as it is."""

    def get_compression_options(self) -> None:
        """Never per-message compression: each viewer's compressor has its own state, so every
        frame would be compressed once per viewer (and the frames are small HTML)."""
        return None

    def open_for_frames(self) -> None:
        """Bound what this socket may leave unread (call in `open`)."""
        stream = getattr(self.ws_connection, "stream", None)
        if isinstance(stream, iostream.BaseIOStream):
            stream.max_write_buffer_size = MAX_BUFFERED_BYTES

    def send_frame(self, frame: Frame) -> bool:
        """Write `frame` to this viewer; False once the socket is closed (or closed now, for
        a viewer too far behind).

        With nothing of this socket's waiting to go out (the usual case), the bytes go straight
        to the socket (`write_to_fd`: one ``send``): no future, callback or buffer entry per
        viewer, which at thousands of viewers also kept the garbage collector busy. What the
        socket does not take, and every write while earlier bytes wait, goes through the
        stream's buffer, in order."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return False
        stream = getattr(connection, "stream", None)
        try:
            if not isinstance(stream, iostream.BaseIOStream) or getattr(
                connection, "_compressor", None
            ):
                self.write_message(frame.text)  # not tornado's RFC 6455 protocol: frame it there
                return True
            sent = 0
            if not stream.writing():
                try:
                    sent = stream.write_to_fd(memoryview(frame.wire))
                except BlockingIOError:
                    sent = 0
                except OSError:
                    sent = 0  # the stream's own write meets the error again and closes
            if sent < len(frame.wire):
                stream.write(frame.wire[sent:])
        except iostream.StreamBufferFullError:
            self.fall_behind()
            return False
        except (iostream.StreamClosedError, websocket.WebSocketClosedError):
            return False
        return True

    async def write_frame(self, text: str) -> None:
        """A catch-up's frame, awaited: the catch-up goes at this viewer's pace."""
        try:
            await self.write_message(text)
        except iostream.StreamBufferFullError:
            self.fall_behind()
            raise websocket.WebSocketClosedError() from None

    def fall_behind(self) -> None:
        """Close a socket whose reader left `MAX_BUFFERED_BYTES` unread: the close frame queues
        behind them (the cap lifted for it), tornado drops the connection if no answer comes;
        the page reconnects from the last event it has."""
        stream = getattr(self.ws_connection, "stream", None)
        if isinstance(stream, iostream.BaseIOStream):
            stream.max_write_buffer_size = None
        self.close(BEHIND_CLOSE, "too far behind: reconnect from the last event seen")


class Feed:
    """The rendered messages of one session and the sockets that follow it live."""

    def __init__(self, session_id: str, store: SessionStore, paths: OwnerPaths):
        self.session_id = session_id
        self.store = store
        self.paths = paths
        #: Rendered messages in seq order; `seqs` holds their seqs, for bisecting, and
        #: `encoded` each one as JSON (serialised once, when it is rendered).
        self.messages: list[dict[str, Any]] = []
        self.seqs: list[int] = []
        self.encoded: list[str] = []
        #: The last event read from the store.
        self.last = 0
        self.sockets: set[Any] = set()
        #: The following sockets by the link (code id) that lets each in: a tick checks each
        #: link once, not each socket (at 5,000 viewers, a walk over all of them took 20 ms,
        #: twenty times a second).
        self.by_link: dict[str, set[Any]] = {}
        self.catching_up = 0
        self.idle_since = time.monotonic()
        self._run_text: list[str] = []  # the open text run's parts, when the last message is one
        self._text_grew = False
        self._reading: asyncio.Task[None] | None = None
        self._read_again = False
        self._loaded = False

    # -- reading and rendering ------------------------------------------------------------------

    async def loaded(self) -> None:
        """The first time: read and render what the store has so far, a slice per loop step.
        After that, at once: what the store got since (or what a read under way has not
        rendered yet) reaches a new viewer as it reaches every follower, once it follows.
        (Reading first would hold its catch-up slot over a loop step for nothing.)"""
        if self._loaded:
            return
        self.poke()
        while self._reading is not None and not self._reading.done():
            await asyncio.shield(self._reading)
        self._loaded = True

    def poke(self) -> None:
        """New events may be in the store: read them (in slices, in a task of their own)."""
        if self._reading is None or self._reading.done():
            self._reading = asyncio.ensure_future(self._read())
        else:
            self._read_again = True

    async def _read(self) -> None:
        self._read_again = True
        while self._read_again:
            self._read_again = False
            events = iter(self.store.events(self.session_id, since=self.last))
            more = True
            while more:
                fresh, more = self._take(events, time.perf_counter() + SLICE_S)
                self.deliver(fresh)
                await asyncio.sleep(0)

    def _take(self, events: Iterator[Event], until: float = math.inf) -> tuple[list[str], bool]:
        """Render events from `events` until the clock passes `until` or none are left: the
        serialised messages new or changed by them (a growing block once), and whether
        `events` may hold more."""
        first = len(self.messages)
        more = False
        for event in events:
            self.last = event.seq
            if event.kind == EventKind.TEXT:
                if self._grow_text(event):
                    first = min(first, len(self.messages) - 1)
            else:
                message = event_message(event, self.paths)
                if message["html"] or message["kind"] in KINDS_WITHOUT_HTML:
                    self._close_text()
                    self.messages.append(message)
                    self.seqs.append(message["seq"])
                # else: nothing a viewer would see (a usage report)
            if time.perf_counter() >= until:
                more = True
                break
        self._render_text()  # a growing block is rendered once per slice, not once per part
        fresh = [json.dumps(message) for message in self.messages[first:]]
        self.encoded[first:] = fresh
        return fresh, more

    def _grow_text(self, event: Event) -> bool:
        """Add a text event to the open run (True: the last message grew) or start a run."""
        text = self.paths.shorten(str(event.data.get("text", "")))
        last = self.messages[-1] if self.messages else None
        if self._run_text and last is not None and last["turn"] == event.turn:
            self._run_text.append(text)
            self._text_grew = True
            last["seq"] = self.seqs[-1] = event.seq
            return True
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
        return False

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
        unsent: the caller adds the socket to `sockets` (`follow`) in the same step of the loop, so no
        message is missed or sent twice. Each write is awaited: a slow reader slows only its
        own catch-up, and the loop serves others between frames. The frames are joined from
        the messages serialised when they were rendered: a catch-up serialises nothing."""
        self.catching_up += 1
        try:
            while (start := bisect.bisect_right(self.seqs, since)) < len(self.messages):
                end = start + CATCH_UP_BATCH
                frame = Frame.text_of(self.encoded[start:end])
                since = self.seqs[min(end, len(self.seqs)) - 1]
                await send(frame)
        finally:
            self.catching_up -= 1
            self.idle_since = time.monotonic()

    def follow(self, sock: Any) -> None:
        """`sock` (whose ``code`` is its link) gets every delivery from now on."""
        self.sockets.add(sock)
        self.by_link.setdefault(sock.code.code_id, set()).add(sock)

    def unfollow(self, sock: Any) -> None:
        self.sockets.discard(sock)
        link = self.by_link.get(sock.code.code_id)
        if link is not None:
            link.discard(sock)
            if not link:
                del self.by_link[sock.code.code_id]

    def deliver(self, encoded: list[str]) -> None:
        """Serialised messages to every follower: one frame, its bytes written to each."""
        if not encoded or not self.sockets:
            return
        frame = Frame.of(encoded)
        for sock in list(self.sockets):
            if not sock.send_frame(frame):
                self.unfollow(sock)

    def unused_for(self) -> float:
        """Seconds since the last viewer left (0 while anyone follows or catches up)."""
        if self.sockets or self.catching_up:
            self.idle_since = time.monotonic()
            return 0.0
        return time.monotonic() - self.idle_since


#: Kinds the page needs even without HTML of their own (the spend gauge reads ``spend``).
KINDS_WITHOUT_HTML = {EventKind.SPEND.value}
