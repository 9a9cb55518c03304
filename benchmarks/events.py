"""Event path throughput: store appends per second, and events per second through a cell.

The store's baseline is the same row written by a bare autocommitting SQLite insert in a
database with the same pragmas; the cell's baseline is the rate at which the fake model streams
the same answer's frames to a direct client.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.turns import Kernel, kernel_env
from omnikernel import events as ev
from omnikernel.store.sessions import SessionStore
from omnikernel.testing import FakeModelServer, Scenario

LONG = "stream a long answer"


def measure_store(appends: int = 2000) -> dict[str, Any]:
    """SessionStore.append (sequence number, session stamp, JSON) against a bare insert."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "store.sqlite3")
        store.open_session("bench", "bench.ipynb")
        bare = sqlite3.connect(Path(tmp) / "bare.sqlite3", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("PRAGMA synchronous=NORMAL")
        bare.execute("CREATE TABLE events (session_id, seq, ts, kind, harness, turn, cell, data)")
        event = ev.text("a streamed chunk of text ").stamped(session_id="bench", turn=1)
        rates: dict[str, list[float]] = {"store": [], "bare": []}
        for _ in range(3):  # interleaved rounds
            started = time.perf_counter()
            for i in range(appends):
                bare.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ("bench", i, 0.0, "text", "", 1, "", json.dumps(event.data)),
                )
            rates["bare"].append(appends / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(appends):
                store.append(event)
            rates["store"].append(appends / (time.perf_counter() - started))
        store.close()
        bare.close()
    ours, base = sorted(rates["store"])[1], sorted(rates["bare"])[1]
    return {"store_appends_per_s": ours, "bare_inserts_per_s": base, "ratio": ours / base}


def frames_per_second(base_url: str) -> tuple[int, float]:
    """(text frames, seconds) of the long answer streamed straight from the fake model."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": LONG}],
        }
    )
    started = time.perf_counter()
    connection.request("POST", "/v1/messages", body, {"content-type": "application/json"})
    frames = sum(1 for line in connection.getresponse() if b"text_delta" in line)
    elapsed = time.perf_counter() - started
    connection.close()
    return frames, elapsed


def measure_cell(words: int = 4000, harness: str = "claude") -> dict[str, Any]:
    """Text events per second from the adapter through the store to the cell's output."""
    scenario = Scenario.from_dict(
        {"rules": [{"match": LONG, "steps": [{"text": "word " * words}]}]}
    )
    with tempfile.TemporaryDirectory() as tmp_name, FakeModelServer(scenario) as model:
        tmp = Path(tmp_name)
        work = tmp / "work"
        work.mkdir()
        kernel = Kernel("omnikernel", work, kernel_env(tmp, harness, model))
        try:
            kernel.execute("Say hi.")  # the CLI's start is not the event path
            frames, direct_s = frames_per_second(model.base_url)
            cell_s, _text = kernel.execute(LONG)
        finally:
            kernel.stop()
        store = SessionStore(tmp / "store" / "sessions.sqlite3")
        (session,) = [s["session_id"] for s in store.sessions()]
        last = store.last_turn(session)
        texts = sum(1 for _ in store.events(session, kinds=(ev.EventKind.TEXT,), turn=last))
        store.close()
    ours, base = texts / cell_s, frames / direct_s
    return {
        "events_per_s": ours,
        "direct_frames_per_s": base,
        "ratio": ours / base,
        "events": texts,
        "frames": frames,
    }
