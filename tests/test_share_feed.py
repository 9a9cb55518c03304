"""The share page's feed, against the share server on a free port and a real store: late
joiners and reconnects get exactly what they missed, streamed text is one Markdown block,
paths are the notebook folder's, agent text is sanitised, no viewer stalls the others, and the
fan-out writes one frame for every viewer in slices that yield (issue 26)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import requests
import websocket

from omnikernel.events import Event, EventKind
from omnikernel.store.shares import ShareCodes

from .test_share import (  # noqa: F401  (fixtures)
    SESSION,
    add,
    clock,
    grant_of,
    join,
    messages,
    received,
    share,
    store,
    ws,
)


def test_late_joiner_and_reconnect_get_exactly_what_they_missed(share, store):
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    for i in range(10):
        add(store, EventKind.TOOL_CALL, tool="Bash", summary=f"step {i}")
    early = ws(share, grant, since=0)
    assert received(early, 10) == list(range(1, 11))
    late = ws(share, grant, since=4)  # a phone that had seen 1..4
    assert received(late, 10) == list(range(5, 11))
    for i in range(3):
        add(store, EventKind.TOOL_CALL, tool="Bash", summary=f"more {i}")
    assert received(early, 13) == [11, 12, 13]
    assert received(late, 13) == [11, 12, 13]
    late.close()
    add(store, EventKind.TOOL_CALL, tool="Bash", summary="while away")
    back = ws(share, grant, since=13)
    assert received(back, 14) == [14]
    early.close()
    back.close()


def test_streamed_text_is_one_markdown_block_as_in_the_cell(share, store):
    """An answer streams in chunks that split words and Markdown; the page gets one block per
    run of text, rendered whole, and a reconnect in the middle gets the block as it is now."""
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    for chunk in ("Created hello.py: a ", "`greet()` function and ", "a **main", "** block"):
        add(store, EventKind.TEXT, text=chunk)
    sock = ws(share, grant)
    (block,) = messages(sock, 4)
    assert block["block"] == 1 and block["seq"] == 4
    assert block["html"].count("<p>") == 1 and "<strong>main</strong>" in block["html"]
    assert "<code>greet()</code>" in block["html"]
    add(store, EventKind.TEXT, text=" that prints the greeting.")
    (grown,) = messages(sock, 5)
    assert grown["block"] == 1 and grown["html"].count("<p>") == 1
    assert "block that prints the greeting." in grown["html"]
    add(store, EventKind.TOOL_CALL, tool="Bash", summary="python hello.py")
    add(store, EventKind.TEXT, text="It ran.")
    after = messages(sock, 7)
    assert [m.get("block") for m in after] == [None, 7]  # a tool call ends the block
    again = ws(share, grant, since=3)  # a phone that saw the block at seq 3
    assert [m.get("block", m["seq"]) for m in messages(again, 7)] == [1, 6, 7]
    sock.close()
    again.close()


def test_viewers_see_paths_relative_to_the_notebook_folder(share, store, tmp_path):
    home = str(Path.home())  # the owner's: the share server runs as the notebook's owner
    folder = f"{home}/project/notebooks"
    store.open_session("s-paths", f"{folder}/analysis.ipynb")
    store.append(
        Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": "r1",
                "tool": "Write",
                "summary": f"write {folder}/hello.py",
                "input": {"file_path": f"{folder}/hello.py"},
            },
            session_id="s-paths",
            turn=1,
        )
    )
    store.append(
        Event(
            EventKind.TOOL_RESULT,
            {"output": f"cd {folder} && ls {home}/.ssh"},
            session_id="s-paths",
            turn=1,
        )
    )
    store.append(
        Event(
            EventKind.TEXT, {"text": f"I wrote `{folder}/hello.py`."}, session_id="s-paths", turn=1
        )
    )
    grant = join(share, ShareCodes(store.path).new_code("s-paths", "ro"))
    sock = ws(share, grant)
    shown = json.dumps(messages(sock, 3))
    assert home not in shown, shown
    assert "write hello.py" in shown and "cd . &amp;&amp; ls ~/.ssh" in shown
    assert "<code>hello.py</code>" in shown
    sock.close()


def test_agent_text_reaches_the_page_only_sanitised(share, store):
    add(store, EventKind.TEXT, text="**hi** <script>alert(1)</script><img src=x onerror=alert(2)>")
    add(store, EventKind.TOOL_CALL, tool="Bash<b>", summary="echo '<script>x</script>'")
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    sock = ws(share, grant)
    shown = messages(sock, 2)
    text, call = shown[0]["html"], shown[1]["html"]
    assert "<strong>hi</strong>" in text
    assert "<script" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "<script" not in call and "&lt;script&gt;" in call and "Bash&lt;b&gt;" in call
    sock.close()


def test_the_page_runs_no_inline_script(share, store):
    """Defence in depth behind the sanitiser: the CSP allows scripts from the server's files
    only, so an injection bug could not run script (the browser half is in test_share_phone)."""
    for path in ("/live", "/join?code=x", "/api/grant"):
        policy = requests.get(f"{share.url}{path}").headers["Content-Security-Policy"]
        scripts = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
        assert scripts.split() == ["script-src", "'self'"], policy
    live = requests.get(f"{share.url}/live").text
    assert "<script>" not in live and '<script src="/static/live.js"' in live
    script = requests.get(f"{share.url}/static/live.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith(
        "text/javascript"
    )
    assert requests.get(f"{share.url}/static/nothing.js").status_code == 404


def follow(sock: websocket.WebSocket, upto: int) -> str | int:
    """Read until event `upto` arrived ("caught up") or the server closed (its close code)."""
    sock.settimeout(30)
    last = 0
    while last < upto:
        opcode, data = sock.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            last = json.loads(data)["events"][-1]["seq"]
    return "caught up"


def test_a_reconnect_storm_does_not_stall_other_viewers(share, store):
    """Eight sockets catching up a 1,500-event session from the start once held the loop for
    seconds (each rendered and sent its whole history in one step): now each event is rendered
    once for all, histories go out in slices, and a link runs two catch-ups at a time."""
    for i in range(1500):
        add(store, EventKind.TOOL_CALL, tool="Bash", summary=f"step {i} " + "x" * 200)
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    others = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    storm: list[websocket.WebSocket] = []
    refused = 0
    waits: list[float] = []

    def reconnect_storm() -> None:
        for _ in range(8):
            sock = ws(share, grant)
            storm.append(sock)

    thread = threading.Thread(target=reconnect_storm)
    thread.start()
    while thread.is_alive() or len(waits) < 5:
        started = time.perf_counter()
        assert requests.get(f"{share.url}/live").status_code == 200
        assert grant_of(share, others).status_code == 200
        waits.append(time.perf_counter() - started)
    thread.join()
    caught_up = 0
    for sock in storm:
        outcome = follow(sock, 1500)
        caught_up += outcome == "caught up"
        refused += outcome == 4429  # the page retries it a moment later
    assert caught_up >= 2 and caught_up + refused == 8, (caught_up, refused)
    assert max(waits) < 1.0, waits  # was 8.4 s before the feed rendered once and sliced
    for sock in storm:
        sock.close()


# -- fan-out: one frame for every viewer, slices that yield, a reader that stops ---------------


def test_one_frame_is_built_per_event_and_every_viewer_reads_it(share, store, monkeypatch):
    """The server frames each delivery once and writes those bytes to every viewer: a real
    WebSocket client decodes them, at each of the three lengths a frame header can carry
    (7-bit, 16-bit and 64-bit), the same for every viewer."""
    from jupyter_ext.share import feed as feed_module

    built: list[int] = []
    frame_init = feed_module.Frame.__init__

    def counted(self: Any, text: str) -> None:
        built.append(len(text))
        frame_init(self, text)

    monkeypatch.setattr(feed_module.Frame, "__init__", counted)
    first = add(store, EventKind.TOOL_CALL, tool="Bash", summary="start")
    links = [join(share, ShareCodes(store.path).new_code(SESSION, "ro")) for _ in range(6)]
    viewers = [ws(share, grant, since=first.seq - 1) for grant in links]  # a link each: no 4429
    for sock in viewers:
        assert received(sock, first.seq) == [first.seq]
    built.clear()
    for size in (10, 1_000, 70_000):  # each event's frame: under 126 bytes, under 64 KiB, over
        event = add(store, EventKind.NOTICE, message="y" * size)
        for sock in viewers:
            (message,) = messages(sock, event.seq)
            assert message["seq"] == event.seq and message["html"].count("y") == size
    assert len(built) == 3, built  # one frame per event, not one per viewer
    assert min(built) < 126 - 2 and 126 < built[1] < 65536 < built[2]
    for sock in viewers:
        sock.close()


def test_a_long_read_is_done_in_slices_that_yield(share, store):
    """A viewer who comes back to a session that grew by thousands of events while nobody
    watched makes the feed read and render all of them: in slices, each a short step of the
    server's loop (measured in the loop thread's own CPU time, which other processes on the
    machine do not move). It used to be one step: 5,000 events, a step of a second or more."""
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    first = add(store, EventKind.TOOL_CALL, tool="Bash", summary="start")
    sock = ws(share, grant)
    assert received(sock, first.seq) == [first.seq]
    sock.close()  # the feed stays (a reconnect reuses it); nobody follows it
    for i in range(5000):
        add(store, EventKind.TEXT if i % 4 else EventKind.TOOL_CALL, text=f"*{i}* " * 8, tool="B")
    steps: list[float] = []
    watching = threading.Event()

    def step(previous: float) -> None:
        now = time.thread_time()
        steps.append(now - previous)
        if watching.is_set():
            share.loop.call_soon(step, time.thread_time())

    watching.set()
    share.loop.call_soon_threadsafe(step, time.thread_time())
    back = ws(share, grant, since=first.seq)
    assert follow(back, first.seq + 5000) == "caught up"
    watching.clear()
    back.close()
    assert len(steps) > 50 and max(steps) < 0.1, (len(steps), max(steps))


def test_a_viewer_that_stops_reading_is_closed_and_catches_up_on_return(share, store, monkeypatch):
    """A viewer that never reads would make the server keep every event for it: past the cap
    its socket is closed (4408, which the page answers by reconnecting), the others go on,
    and a reconnect from the last event it has gets the rest."""
    from jupyter_ext.share import feed as feed_module

    monkeypatch.setattr(feed_module, "MAX_BUFFERED_BYTES", 256 * 1024)
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    start = add(store, EventKind.TOOL_CALL, tool="Bash", summary="start")
    stalled = websocket.create_connection(
        f"ws://127.0.0.1:{share.server.port}/ws?since={start.seq - 1}",
        timeout=30,
        subprotocols=grant.subprotocols,
        origin=share.url,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    reader = ws(share, grant, since=start.seq - 1)
    assert received(stalled, start.seq) == [start.seq]
    assert received(reader, start.seq) == [start.seq]
    closed_after = 0
    for round_no in range(200):  # until the server gave up on the stalled one
        for i in range(20):
            last = add(store, EventKind.TOOL_RESULT, output=f"{round_no}.{i} " + "z" * 3900)
        assert received(reader, last.seq)[-1] == last.seq  # the one who reads is served
        feed = share.server.feeds[SESSION]
        if len(feed.sockets) == 1:
            closed_after = last.seq
            break
    assert closed_after, "the stalled viewer was never let go"
    seen, code = 0, None
    while code is None:  # what it was sent before the close, then the close itself
        opcode, data = stalled.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big")
        elif opcode == websocket.ABNF.OPCODE_TEXT:
            seen = json.loads(data)["events"][-1]["seq"]
    assert code == feed_module.BEHIND_CLOSE and seen < closed_after
    back = ws(share, grant, since=seen)
    assert received(back, closed_after)[0] == seen + 1
    for sock in (stalled, reader, back):
        sock.close()


def test_pages_opened_and_closed_at_once_are_one_commit_each_way(share, store):
    """``%share`` lists who has the page open. Thirty pages arriving, then all leaving at
    once (a network drop), are written in a transaction or two, not one commit each (each held
    the loop: a thousand leaving once stalled the server for over a second)."""
    codes = ShareCodes(store.path)
    first = add(store, EventKind.TOOL_CALL, tool="Bash", summary="start")
    links = [join(share, codes.new_code(SESSION, "ro")) for _ in range(30)]
    statements: list[str] = []
    share.server.codes._db.set_trace_callback(statements.append)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:  # arriving together
        pages = list(pool.map(lambda grant: ws(share, grant, since=first.seq - 1), links))
    for sock in pages:
        assert received(sock, first.seq) == [first.seq]
    deadline = time.monotonic() + 30
    while len(codes.watchers(SESSION)) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(codes.watchers(SESSION)) == 30
    for sock in pages:
        sock.close()
    while codes.watchers(SESSION) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert codes.watchers(SESSION) == []
    share.server.codes._db.set_trace_callback(None)
    commits, in_transaction = 0, False
    for statement in statements:  # a write outside BEGIN ... COMMIT is a commit of its own
        if statement.startswith("BEGIN"):
            in_transaction, commits = True, commits + 1
        elif statement.startswith(("COMMIT", "ROLLBACK")):
            in_transaction = False
        elif "share_watchers" in statement and not statement.startswith("SELECT"):
            commits += not in_transaction
    assert 2 <= commits <= 15, statements  # one commit a page each way: 60
