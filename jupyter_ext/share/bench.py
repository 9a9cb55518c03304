"""``python -m jupyter_ext.share.bench``: how fast the share server fans out and catches up.

Starts ``python -m jupyter_ext.share`` on a free loopback port over a fresh store, opens N
viewers' WebSockets (100, 500, 1000), appends events to the store and times each from its
commit to every viewer having it (p50, p99 over viewers and events); then a late joiner's
catch-up of 10,000 events; then an answer on the page to the kernel's side taking it (the
store path a tap travels; the full tap-to-resume in a browser is in tests/test_share_phone.py).
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

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from omnikernel.events import Event, EventKind
from omnikernel.store import SessionStore

from .codes import ShareCodes

SESSION = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fan_out(port: int, cookie: str, store: SessionStore, viewers: int, rounds: int = 5
                  ) -> list[float]:  # fmt: skip
    last = max((e.seq for e in store.events(SESSION)), default=0)
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws?since={last}", headers={
        "Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"})  # fmt: skip
    socks = [await websocket_connect(request) for _ in range(viewers)]
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


async def catch_up(port: int, cookie: str, events: int) -> float:
    request = HTTPRequest(f"ws://127.0.0.1:{port}/ws?since=0", headers={
        "Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"})  # fmt: skip
    start = time.perf_counter()
    sock = await websocket_connect(request)
    seen = 0
    while seen < events:
        seen = json.loads(await sock.read_message())["events"][-1]["seq"]
    sock.close()
    return time.perf_counter() - start


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="share-bench-"))
    store_path = tmp / "store.sqlite3"
    store = SessionStore(store_path)
    store.open_session(SESSION, "bench.ipynb")
    codes = ShareCodes(store_path)
    port = free_port()
    env = dict(os.environ, OMNIKERNEL_STORE=str(store_path))
    server = subprocess.Popen([sys.executable, "-m", "jupyter_ext.share", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        browser = requests.Session()
        page = browser.get(f"{url}/join", params={"code": (code := codes.new_code(SESSION, "rw"))})
        xsrf = page.text.split('name="_xsrf" value="')[1].split('"')[0]
        browser.post(f"{url}/join", data={"code": code, "_xsrf": xsrf}, allow_redirects=False)
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        for viewers in (100, 500, 1000):
            delays = asyncio.run(fan_out(port, cookie, store, viewers))
            print(f"{viewers:5d} viewers: event stored -> every viewer has it  "
                  f"p50 {1000 * statistics.median(delays):6.1f} ms  "
                  f"p99 {1000 * pct(delays, 0.99):6.1f} ms")  # fmt: skip
        base = max(e.seq for e in store.events(SESSION))
        for i in range(10_000 - base):
            store.append(Event(EventKind.TEXT, {"text": f"history {i} " * 4}, session_id=SESSION))
        took = asyncio.run(catch_up(port, cookie, 10_000))
        print(f"catch-up of 10,000 events by a late joiner: {1000 * took:.0f} ms")
        store.append(Event(EventKind.APPROVAL_REQUEST, {"request_id": "r", "tool": "Bash",
                                                        "summary": "true"}, session_id=SESSION))  # fmt: skip
        start = time.perf_counter()
        browser.post(f"{url}/api/answer", json={"request_id": "r", "allow": True},
                     headers={"X-XSRFToken": browser.cookies["_xsrf"]})  # fmt: skip
        from omnikernel.share_magics import ANSWER_POLL_S

        while codes.take_answer(SESSION, "r") is None:
            time.sleep(ANSWER_POLL_S)
        print(
            f"answer on the page -> taken by the kernel's poller: "
            f"{1000 * (time.perf_counter() - start):.0f} ms (poll every {ANSWER_POLL_S * 1000:.0f} ms)"
        )
        codes.feed_opened(SESSION)  # this process plays the kernel that shows the feed
        took = asyncio.run(prompt_to_turn(url, browser, codes))
        print(f"prompt on the page -> the co-driver's turn starts in the kernel: "
              f"{1000 * took:.0f} ms")  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)


async def prompt_to_turn(url: str, browser: requests.Session, codes: ShareCodes) -> float:
    """From a co-driver's Send to the kernel's `CoDriving` starting the turn."""
    from omnikernel.codrive import CoDriving

    started = asyncio.Event()

    async def run(_prompt: object, _feed: object) -> None:
        started.set()

    driving = CoDriving(lambda: codes, lambda: SESSION, run, busy=lambda: False)
    driving.show(object())  # type: ignore[arg-type]  (no widgets here: the run ignores it)
    await asyncio.sleep(0.3)  # taking prompts, as a kernel that showed the feed a while ago
    start = time.perf_counter()
    sent = await asyncio.to_thread(browser.post, f"{url}/api/prompt", json={"text": "go on"},
                                   headers={"X-XSRFToken": browser.cookies["_xsrf"]})  # fmt: skip
    assert sent.status_code == 202, sent.text
    await asyncio.wait_for(started.wait(), 10)
    took = time.perf_counter() - start
    driving.close()
    return took


if __name__ == "__main__":
    main()
