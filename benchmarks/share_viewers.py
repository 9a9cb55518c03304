"""``python -m benchmarks.share_viewers``: many share-page viewers in a process of their own.

Why a process of its own: on a 2-core machine one Python process that both appends events and
reads a thousand WebSockets measures its own reading loop more than the server. Here the viewers
run apart from the server and from the process that appends, each one a bare asyncio protocol
that parses WebSocket frames and notes, at the moment bytes arrive, the first time it sees each
round's marker (``mark<N>x`` in the event's text). What a figure measures, then: from the
event's commit (in the appending process) to the moment this process's loop is handed the bytes
of the frame that carries it, for every viewer; the spread between viewers includes this
process taking the sockets' reads one after another (a few microseconds each).

Protocol, one line each way (stdin/stdout): the first stdin line is JSON ``{"port", "viewers",
"since", "links"}`` (``links``: the grants of each link); it answers ``ready`` once every viewer follows live,
``done N`` once every viewer has round N, and to ``report`` a JSON object ``{round: [arrival
times]}``, then exits. The grants come on stdin, never in the command line (``ps`` shows that).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import re
import sys
import time
from typing import Any

MARK = re.compile(rb"mark(\d+)x")
#: Close code of a refused catch-up (`jupyter_ext.share.server.LiveSocket.open`): try again.
BUSY = 4429


class Viewers:
    """Arrival times per round over all viewers; says ``done N`` when all have round N."""

    def __init__(self, count: int):
        self.count = count
        self.arrivals: dict[int, list[float]] = {}

    def arrived(self, round_no: int, when: float) -> None:
        times = self.arrivals.setdefault(round_no, [])
        times.append(when)
        if len(times) == self.count:
            sys.stdout.write(f"done {round_no}\n")
            sys.stdout.flush()


class Viewer(asyncio.Protocol):
    """One viewer's WebSocket, parsed by hand: server frames are never masked or fragmented
    by tornado, and a ping gets its pong (masked, as a client's frames must be)."""

    def __init__(self, viewers: Viewers, handshake: bytes):
        self.viewers = viewers
        self.handshake = handshake
        self.buffer = bytearray()
        self.upgraded = False
        self.seen: set[int] = set()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        #: Set when the first frame arrives (the catch-up: the viewer follows next) or a close.
        self.first: asyncio.Future[int] = loop.create_future()
        self.closed_with = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_result(-1)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                if not self.first.done():
                    self.first.set_exception(RuntimeError(head.split(b"\r\n")[0].decode()))
                return
            self.upgraded = True
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            if opcode == 0x1:
                for match in MARK.finditer(payload):
                    round_no = int(match.group(1))
                    if round_no not in self.seen:
                        self.seen.add(round_no)
                        self.viewers.arrived(round_no, now)
                if not self.first.done():
                    self.first.set_result(0)
            elif opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.closed_with = int.from_bytes(payload[:2], "big") if payload else 1005
                if not self.first.done():
                    self.first.set_result(self.closed_with)

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


def handshake(port: int, since: int, grant: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?since={since} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://127.0.0.1:{port}\r\n"
        f"Sec-WebSocket-Protocol: omk-share, omk-grant.{grant}\r\n\r\n"
    ).encode()


async def connect(
    viewers: Viewers, port: int, since: int, grant: str
) -> tuple[asyncio.Transport, Viewer]:
    """A viewer that follows live: its catch-up (the frame after `since`) arrived, so the
    server added it to the feed's sockets; a refused catch-up (4429) is tried again."""
    loop = asyncio.get_running_loop()
    for attempt in range(200):
        transport, viewer = await loop.create_connection(
            lambda: Viewer(viewers, handshake(port, since, grant)), "127.0.0.1", port
        )
        if await asyncio.wait_for(viewer.first, 120) == 0:
            return transport, viewer  # type: ignore[return-value]
        transport.close()
        await asyncio.sleep(0.02 * (1 + attempt % 10))
    raise RuntimeError("a viewer was refused 200 times")


async def run(config: dict[str, Any]) -> None:
    viewers = Viewers(config["viewers"])
    links: list[list[str]] = config["links"]
    opened: list[tuple[asyncio.Transport, Viewer]] = []
    queue = list(range(config["viewers"]))

    async def worker(index: int) -> None:
        grants = links[index % len(links)]
        while queue:
            grant = grants[queue.pop() % len(grants)]
            opened.append(await connect(viewers, config["port"], config["since"], grant))

    # Two at a time per link: the server lets a link catch up twice at once.
    await asyncio.gather(*(worker(i) for i in range(2 * len(links))))
    # This process's own collector would pause the reading of every socket now and then
    # (thousands of viewers' objects to walk): off, for a process that lives a few seconds.
    gc.collect()
    gc.freeze()
    gc.disable()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (await reader.readline()).decode().strip() not in ("report", ""):
        pass
    sys.stdout.write(json.dumps(viewers.arrivals) + "\n")
    sys.stdout.flush()
    for transport, _ in opened:
        transport.close()


class Joiner(Viewer):
    """A late joiner that only looks for the end of its catch-up (the last message's seq), so
    that its own reading costs next to nothing beside the server's work."""

    def __init__(self, viewers: Viewers, handshake: bytes, until: int):
        super().__init__(viewers, handshake)
        self.end = f'"seq": {until},'.encode()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.done.done() and (self.end in data or self.end in self.tail + data[:64]):
            self.done.set_result(None)
        self.tail = data[-64:]

    tail = b""


async def join_when_told(config: dict[str, Any]) -> None:
    """The late joiner: on each ``go``, catch up on a session from its start once and say how
    long it took (the first catch-up of all is the feed's cold read); on ``quit`` (or stdin
    closed), end. One process for the whole run: starting Python for each catch-up would load
    the machine as well."""
    port, until, grant = config["port"], config["until"], config["grant"]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def catch_up() -> float:
        start = time.perf_counter()
        while True:
            transport, joiner = await loop.create_connection(
                lambda: Joiner(Viewers(0), handshake(port, 0, grant), until), "127.0.0.1", port
            )
            if await joiner.first == 0:  # not refused (another catch-up of this link)
                await joiner.done
                transport.close()
                return time.perf_counter() - start
            transport.close()

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while (await reader.readline()).decode().strip() == "go":
        sys.stdout.write(f"{await catch_up()}\n")
        sys.stdout.flush()


def main() -> None:
    config = json.loads(sys.stdin.readline())
    asyncio.run(join_when_told(config) if config.get("join") else run(config))


if __name__ == "__main__":
    main()
