"""``python -m benchmarks.share``: how fast the share server fans out and catches up.

Starts ``python -m jupyter_ext.share`` on a free loopback port over a fresh store, opens N
viewers' WebSockets (100, 500, 1000), appends events to the store and times each from its
commit to every viewer having it (p50, p99 over viewers and events); then a late joiner's
catch-up of 10,000 events; then an answer on the page to the kernel's side taking it (the
store path a tap travels; the full tap-to-resume in a browser is in tests/test_share_phone.py),
and a co-driver's prompt to the kernel starting its turn. `benchmarks` puts these figures
in its table; run alone, this prints them.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from jupyter_ext.share.client import Grant, exchange
from jupyter_ext.share.render import event_message
from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes

SESSION = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fan_out(
    port: int, grant: Grant, store: SessionStore, viewers: int, rounds: int = 5
) -> list[float]:
    last = max((e.seq for e in store.events(SESSION)), default=0)
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/ws?since={last}", headers={"Origin": f"http://127.0.0.1:{port}"}
    )
    socks = [
        await websocket_connect(request, subprotocols=grant.subprotocols) for _ in range(viewers)
    ]
    delays: list[float] = []
    for i in range(rounds):
        sent = time.time()
        stored = store.append(Event(EventKind.TEXT, {"text": f"round {i}"}, session_id=SESSION))

        async def wait(sock: object, stored: Event = stored, sent: float = sent) -> float:
            while True:
                message = json.loads(await sock.read_message())  # type: ignore[attr-defined]
                if any(m["seq"] == stored.seq for m in message["events"]):
                    return time.time() - sent

        delays += await asyncio.gather(*(wait(s) for s in socks))
    for sock in socks:
        sock.close()
    return delays


async def catch_up(port: int, grant: Grant, events: int) -> float:
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/ws?since=0", headers={"Origin": f"http://127.0.0.1:{port}"}
    )
    start = time.perf_counter()
    sock = await websocket_connect(request, subprotocols=grant.subprotocols)
    seen = 0
    while seen < events:
        seen = json.loads(await sock.read_message())["events"][-1]["seq"]
    sock.close()
    return time.perf_counter() - start


def measure(
    viewer_counts: tuple[int, ...] = (100, 500, 1000), history: int = 10_000
) -> dict[str, Any]:
    """Every share figure with the baseline measured in the same run: fan-out against one
    viewer, catch-up against reading the same events straight from the store, an answer and a
    prompt from the page against the kernel's poll period (their floor)."""
    from omnikernel.approvals.from_share import ANSWER_POLL_S
    from omnikernel.kernel.codrive import POLL_S

    tmp = Path(tempfile.mkdtemp(prefix="share-bench-"))
    store_path = tmp / "store.sqlite3"
    store = SessionStore(store_path)
    store.open_session(SESSION, "bench.ipynb")
    codes = ShareCodes(store_path)
    port = free_port()
    env = dict(os.environ, OMNIKERNEL_STORE=str(store_path))
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_ext.share", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out: dict[str, Any] = {"fan_out": {}}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        grant = exchange(url, codes.new_code(SESSION, "rw"))
        for viewers in (1, *viewer_counts):
            delays = asyncio.run(
                fan_out(port, grant, store, viewers, rounds=20 if viewers == 1 else 5)
            )
            out["fan_out"][viewers] = (statistics.median(delays), pct(delays, 0.99))
        base = max(e.seq for e in store.events(SESSION))
        for i in range(history - base):  # turns of streamed text between tool calls
            kind, data = (
                (EventKind.TOOL_CALL, {"tool": "Bash", "summary": f"ls {i}"})
                if i % 4 == 0
                else (EventKind.TEXT, {"text": f"history {i} " * 4})
            )
            store.append(Event(kind, data, session_id=SESSION, turn=1 + i // 40))
        out["catch_up_s"] = asyncio.run(catch_up(port, grant, history))
        started = time.perf_counter()
        direct = [event_message(e) for e in SessionStore(store_path).events(SESSION)]
        out["store_read_s"] = time.perf_counter() - started
        out["history"] = len(direct)
        store.append(
            Event(
                EventKind.APPROVAL_REQUEST,
                {"request_id": "r", "tool": "Bash", "summary": "true"},
                session_id=SESSION,
            )
        )
        started = time.perf_counter()
        requests.post(
            f"{url}/api/answer", json={"request_id": "r", "allow": True}, headers=grant.headers
        )
        while codes.take_answer(SESSION, "r") is None:
            time.sleep(ANSWER_POLL_S)
        out["answer_s"], out["answer_poll_s"] = time.perf_counter() - started, ANSWER_POLL_S
        codes.feed_opened(SESSION)  # this process plays the kernel that shows the feed
        out["prompt_s"], out["prompt_poll_s"] = (
            asyncio.run(prompt_to_turn(url, grant, codes)),
            POLL_S,
        )
    finally:
        server.terminate()
        server.wait(10)
    return out


def main() -> None:
    r = measure()
    one = r["fan_out"].pop(1)
    print(
        f"    1 viewer:  event stored -> the viewer has it  p50 {1000 * one[0]:6.1f} ms  "
        f"p99 {1000 * one[1]:6.1f} ms"
    )
    for viewers, (p50, p99) in r["fan_out"].items():
        print(
            f"{viewers:5d} viewers: event stored -> every viewer has it  "
            f"p50 {1000 * p50:6.1f} ms  p99 {1000 * p99:6.1f} ms"
        )
    print(
        f"catch-up of {r['history']:,} events by a late joiner: {1000 * r['catch_up_s']:.0f} ms "
        f"(the same read from the store: {1000 * r['store_read_s']:.0f} ms)"
    )
    print(
        f"answer on the page -> taken by the kernel's poller: {1000 * r['answer_s']:.0f} ms "
        f"(poll every {1000 * r['answer_poll_s']:.0f} ms)"
    )
    print(
        f"prompt on the page -> the co-driver's turn starts in the kernel: "
        f"{1000 * r['prompt_s']:.0f} ms (poll every {1000 * r['prompt_poll_s']:.0f} ms)"
    )


async def prompt_to_turn(url: str, grant: Grant, codes: ShareCodes) -> float:
    """From a co-driver's Send to the kernel's `CoDriving` starting the turn."""
    from omnikernel.kernel.codrive import CoDriving

    started = asyncio.Event()

    async def run(_prompt: object, _feed: object) -> None:
        started.set()

    driving = CoDriving(lambda: codes, lambda: SESSION, run, busy=lambda: False)
    driving.show(object())  # type: ignore[arg-type]  (no widgets here: the run ignores it)
    await asyncio.sleep(0.3)  # taking prompts, as a kernel that showed the feed a while ago
    start = time.perf_counter()
    sent = await asyncio.to_thread(
        requests.post, f"{url}/api/prompt", json={"text": "go on"}, headers=grant.headers
    )
    assert sent.status_code == 202, sent.text
    await asyncio.wait_for(started.wait(), 10)
    took = time.perf_counter() - start
    driving.close()
    return took


if __name__ == "__main__":
    main()
