"""Event path throughput: store appends per second, and events per second through a cell.

The store's baseline is the same row written by a bare autocommitting SQLite insert in a
database with the same pragmas. The store is measured as a stream uses it (group commit,
`SessionStore.append_many`, batches of `BATCH`) and one commit per event (`append`, what every
other event takes).

The cell is measured twice, as a console client sees it (``stream`` output, no cell id):

- with Claude Code itself streaming a long answer from the scripted model: the cell's text rate
  against the CLI's own rate read directly (the same flags, its deltas timed at a pipe), from
  the first text to the last. Past the CLI's rate nothing can go, so this ratio is the figure.
- with a replayed Claude Code: a stand-in `claude` on the kernel's PATH that answers each
  prompt with the lines the real CLI printed for it (recorded first, in the same run), as fast
  as the pipe takes them. This is the path's own capacity (adapter -> store -> cell), from the
  request to the cell's idle; its baseline is the same replay read directly, line by line.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.turns import MODELS, Kernel, clean_env, kernel_env
from omnikernel import events as ev
from omnikernel.store.sessions import SessionStore
from omnikernel.testing import FakeModelServer, Scenario

LONG = "stream a long answer"
#: Events per group commit in the store's figure: a 4,000-word Claude Code answer read by a
#: session on the 2-core machine formed batches of about 14 (how many depends on how far the
#: CLI is ahead of the kernel); 8 stays below that.
BATCH = 8
#: The flags the kernel runs Claude Code with that shape its output (see `ClaudeHarness`).
STREAM_FLAGS = ["--output-format", "stream-json", "--verbose", "--include-partial-messages"]


def measure_store(appends: int = 2000) -> dict[str, Any]:
    """SessionStore appends (sequence number, session stamp, redaction, JSON) against a bare
    insert: group-committed in batches of `BATCH`, and one commit each."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(Path(tmp) / "store.sqlite3")
        store.open_session("bench", "bench.ipynb")
        bare = sqlite3.connect(Path(tmp) / "bare.sqlite3", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("PRAGMA synchronous=NORMAL")
        bare.execute("CREATE TABLE events (session_id, seq, ts, kind, harness, turn, cell, data)")
        event = ev.text("a streamed chunk of text ").stamped(session_id="bench", turn=1)
        rates: dict[str, list[float]] = {"store": [], "single": [], "bare": []}
        for _ in range(3):  # interleaved rounds
            started = time.perf_counter()
            for i in range(appends):
                bare.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    ("bench", i, 0.0, "text", "", 1, "", json.dumps(event.data)),
                )
            rates["bare"].append(appends / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(appends // BATCH):
                store.append_many([event] * BATCH)
            rates["store"].append(appends // BATCH * BATCH / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(appends):
                store.append(event)
            rates["single"].append(appends / (time.perf_counter() - started))
        store.close()
        bare.close()
    ours, single, base = (sorted(rates[k])[1] for k in ("store", "single", "bare"))
    return {
        "store_appends_per_s": ours,
        "single_appends_per_s": single,
        "bare_inserts_per_s": base,
        "ratio": ours / base,
        "batch": BATCH,
    }


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


def direct_claude(model: FakeModelServer, home: Path, prompt: str) -> tuple[list[bytes], float]:
    """Claude Code run by hand on `prompt`: (its output lines, seconds from its first text
    delta to its last, as a reader of its pipe sees them)."""
    binary = shutil.which("claude")
    if not binary:
        raise SystemExit("the `claude` CLI is not installed; install it with: make harness-clis")
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(
        HOME=str(home),
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="bench",
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
    )
    argv = [binary, "-p", *STREAM_FLAGS, "--model", MODELS["claude"], prompt]
    process = subprocess.Popen(
        argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    lines, deltas = [], []
    for line in process.stdout:
        lines.append(line)
        if b'"text_delta"' in line:
            deltas.append(time.perf_counter())
    if process.wait(timeout=120) != 0 or len(deltas) < 2:
        raise RuntimeError(f"direct claude failed: {b''.join(lines[-5:]).decode()[-800:]}")
    return lines, deltas[-1] - deltas[0]


#: The stand-in `claude`: answers each user message with the recorded lines of the real CLI
#: for that prompt (the long answer's, else the short one's), then waits for the next.
REPLAY = """#!{python}
import json, sys
if "--version" in sys.argv:
    print("{version} (Claude Code)")
    sys.exit(0)
here = {here!r}
long_lines = open(here + "/long.jsonl", "rb").read()
short_lines = open(here + "/short.jsonl", "rb").read()
out = sys.stdout.buffer
for line in sys.stdin:
    message = json.loads(line)
    if message.get("type") != "user":
        continue
    out.write(long_lines if {long!r} in line else short_lines)
    out.flush()
"""


def replay_rate(folder: Path) -> tuple[int, float]:
    """(text events, seconds) of the replayed long answer read directly, line by line, each
    parsed as JSON (what the adapter does first)."""
    process = subprocess.Popen(
        [str(folder / "claude")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    started = time.perf_counter()
    process.stdin.write(json.dumps({"type": "user", "message": LONG}).encode() + b"\n")
    process.stdin.flush()
    texts = 0
    for line in process.stdout:
        message = json.loads(line)
        texts += b'"text_delta"' in line
        if message.get("type") == "result":
            break
    elapsed = time.perf_counter() - started
    process.stdin.close()
    process.wait(timeout=30)
    return texts, elapsed


def cell_text_span(kernel: Kernel, code: str, timeout: float = 120) -> tuple[float, float]:
    """Run `code`: (seconds from the request to idle, seconds from its first ``stream`` output
    to its last)."""
    started = time.perf_counter()
    msg_id = kernel.kc.execute(code)
    first = last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            last = time.perf_counter()
            first = first or last
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            if first is None or last is None:
                raise RuntimeError("the cell showed no text")
            return time.perf_counter() - started, last - first
    raise TimeoutError(f"cell did not finish in {timeout}s")


def stored_texts(tmp: Path) -> int:
    """Text events of the last turn in the kernel's store."""
    store = SessionStore(tmp / "store" / "sessions.sqlite3")
    try:
        (session,) = [s["session_id"] for s in store.sessions()]
        last = store.last_turn(session)
        return sum(1 for _ in store.events(session, kinds=(ev.EventKind.TEXT,), turn=last))
    finally:
        store.close()


def measure_cell(words: int = 20000, rounds: int = 3, harness: str = "claude") -> dict[str, Any]:
    """Text events per second from the adapter through the store to the cell's output: with
    the real CLI (against its own rate, rounds interleaved) and with its recorded output
    replayed. Medians of `rounds`."""
    scenario = Scenario.from_dict(
        {"rules": [{"match": LONG, "steps": [{"text": "word " * words}]}]}
    )
    with tempfile.TemporaryDirectory() as tmp_name, FakeModelServer(scenario) as model:
        tmp = Path(tmp_name)
        frames, frames_s = frames_per_second(model.base_url)
        short_lines, _ = direct_claude(model, tmp / "direct", "Say hi.")
        direct_rates, cell_rates = [], []
        work = tmp / "work"
        work.mkdir()
        kernel = Kernel("omnikernel", work, kernel_env(tmp, harness, model))
        try:
            kernel.execute("Say hi.")  # the CLI's start is not the event path
            for _ in range(rounds):
                long_lines, direct_span = direct_claude(model, tmp / "direct", LONG)
                direct_texts = sum(1 for line in long_lines if b'"text_delta"' in line)
                direct_rates.append(direct_texts / direct_span)
                _, span = cell_text_span(kernel, LONG)
                texts = stored_texts(tmp)
                if texts != direct_texts:
                    raise RuntimeError(f"events lost: stored {texts} of {direct_texts}")
                cell_rates.append(texts / span)
        finally:
            kernel.stop()

        replayed = tmp / "replay"
        (replayed / "bin").mkdir(parents=True)
        (replayed / "bin" / "long.jsonl").write_bytes(b"".join(long_lines))
        (replayed / "bin" / "short.jsonl").write_bytes(b"".join(short_lines))
        version = subprocess.run(
            ["claude", "--version"], capture_output=True, text=True, timeout=60
        ).stdout.split()[0]
        replay = replayed / "bin" / "claude"
        replay.write_text(
            REPLAY.format(
                python=sys.executable, version=version, here=str(replay.parent), long=LONG
            )
        )
        replay.chmod(0o755)
        env = kernel_env(replayed, harness, model)
        env["PATH"] = f"{replay.parent}{os.pathsep}{env['PATH']}"
        work = replayed / "work"
        work.mkdir()
        replay_rates, replay_direct = [], []
        kernel = Kernel("omnikernel", work, env)
        try:
            kernel.execute("Say hi.")
            for _ in range(rounds):
                replay_texts, replay_s = replay_rate(replay.parent)
                replay_direct.append(replay_texts / replay_s)
                cell_s, _ = cell_text_span(kernel, LONG)
                stored = stored_texts(replayed)
                if stored != replay_texts:
                    raise RuntimeError(f"events lost: stored {stored} of {replay_texts} (replay)")
                replay_rates.append(stored / cell_s)
        finally:
            kernel.stop()
    ours, base = statistics.median(cell_rates), statistics.median(direct_rates)
    return {
        "events_per_s": ours,
        "direct_events_per_s": base,
        "ratio": ours / base,
        "events": direct_texts,
        "replay_events_per_s": statistics.median(replay_rates),
        "replay_direct_per_s": statistics.median(replay_direct),
        "replay_events": replay_texts,
        "model_frames_per_s": frames / frames_s,
        "rounds": rounds,
        "each": {"cell": cell_rates, "direct": direct_rates, "replay": replay_rates},
    }
