"""``python -m benchmarks.hub``: how many viewers one user's server carries under JupyterHub.

Starts the local hub (`omnikernel.testing.hub`), alice's server, a session shared with bob,
then opens N of bob's WebSockets to the share page under alice's server, through the hub's
proxy (configurable-http-proxy), appends events to alice's store and times each from its
commit to every viewer having it (p50, p99). The baseline is one viewer, measured in the same
run. `benchmarks` puts these figures in its table; run alone, this prints them.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes
from omnikernel.testing.hub import LocalHub

SESSION = "bench-hub"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fan_out(
    hub: LocalHub, token: str, store: SessionStore, viewers: int, rounds: int = 5
) -> list[float]:
    last = max((e.seq for e in store.events(SESSION)), default=0)
    url = hub.url.replace("http://", "ws://")
    request = HTTPRequest(
        f"{url}/user/alice/omnikernel/share/ws?session={SESSION}&since={last}",
        headers={"Origin": hub.url, "Authorization": f"token {token}"},
        request_timeout=120,
        connect_timeout=120,
    )
    socks = []
    for _ in range(viewers):  # one at a time: the proxy and the sign-in see a gentle ramp
        socks.append(await websocket_connect(request, subprotocols=["omk-share"]))
    delays: list[float] = []
    for i in range(rounds):
        sent = time.time()
        stored = store.append(Event(EventKind.TEXT, {"text": f"round {i}"}, session_id=SESSION))

        async def wait(sock: Any, stored: Event = stored, sent: float = sent) -> float:
            while True:
                message = json.loads(await sock.read_message())
                if any(m["seq"] == stored.seq for m in message["events"]):
                    return time.time() - sent

        delays += await asyncio.gather(*(wait(s) for s in socks))
    for sock in socks:
        sock.close()
    return delays


def measure(viewer_counts: tuple[int, ...] = (100, 300)) -> dict[str, Any]:
    """Fan-out through the hub for 1 viewer (the baseline) and each of `viewer_counts`."""
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    with LocalHub(tmp / "hub") as hub:
        hub.start_server("alice")
        store = SessionStore(hub.workdir / "home/alice/.omnikernel/sessions.sqlite3")
        store.open_session(SESSION, "bench.ipynb")
        hub.api("POST", "/hub/api/shares/alice/", {"user": "bob"}, token=hub.token_of("alice"))
        ShareCodes(store.path).share_with(SESSION, "bob", "ro")
        token = hub.token_of("bob")
        results: dict[int, tuple[float, float]] = {}
        for viewers in (1, *viewer_counts):
            delays = asyncio.run(fan_out(hub, token, store, viewers))
            results[viewers] = (pct(delays, 0.5), pct(delays, 0.99))
    return {"fan_out": results}


if __name__ == "__main__":
    for viewers, (p50, p99) in measure()["fan_out"].items():
        print(
            f"{viewers:5d} viewers through the hub: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
