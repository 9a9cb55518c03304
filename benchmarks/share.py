"""``python -m benchmarks.share``: how fast the share server fans out and catches up.

Starts ``python -m jupyter_ext.share`` on a free loopback port over a fresh store, opens N
viewers' WebSockets (100, 500, 1,000, 5,000) in a process of their own
(`benchmarks.share_viewers`: the server, the viewers and this process, which appends, each get
their share of the two cores), appends events to the store and times each from its commit to
every viewer having it (p50, p99 over viewers and events), with the server's CPU time per
event; then a late joiner's catch-up of 10,000 events; then what late joiners' catch-ups of
10,000 events add to the p99 of 1,000 viewers of another session; then an answer on the page to
the kernel's side taking it (the store path a tap travels; the full tap-to-resume in a browser
is in tests/test_share_phone.py), and a co-driver's prompt to the kernel starting its turn.
`benchmarks` puts these figures in its table; run alone, this prints them.
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
from collections.abc import Callable
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
#: Sessions a late joiner catches up on: alone, then while the viewers of SESSION watch.
HISTORY, HISTORY_LIVE = "bench-history", "bench-history-live"
REPO = Path(__file__).resolve().parents[1]
#: Links the viewers' grants come from (each viewer exchanges one, as a page does): a link
#: catches up twice at a time at most (`jupyter_ext.share.limits`), so connecting goes faster
#: with a few.
LINKS = 8
#: The share server's command (a profiler may wrap it).
SERVER = [sys.executable, "-m", "jupyter_ext.share"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ViewerProcess:
    """`count` viewers in their own process (`benchmarks.share_viewers`), following SESSION."""

    rounds = 0  # round numbers are unique over the run: a marker never means two rounds

    def __init__(
        self, port: int, grants: list[list[str]], store: SessionStore, count: int, server: int
    ):
        # A fresh text block (after a tool call) is the frame each viewer's catch-up gets.
        store.append(
            Event(EventKind.TOOL_CALL, {"tool": "Bash", "summary": "true"}, session_id=SESSION)
        )
        hello = store.append(Event(EventKind.TEXT, {"text": "hello"}, session_id=SESSION))
        self.store, self.count, self.server = store, count, server
        self.server_cpu_s = 0.0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.share_viewers"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        config = {
            "port": port,
            "viewers": count,
            "since": hello.seq - 1,
            "links": grants,
        }
        self.say(json.dumps(config))
        self.expect("ready")

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        while (got := self.process.stdout.readline()) != line + "\n":
            if not got:
                raise RuntimeError(f"the viewers' process ended before saying {line!r}")

    def rounds_of(self, rounds: int, before: Callable[[], None] = lambda: None) -> dict[int, float]:
        """Append `rounds` text events, one after every viewer has the last (`before` each):
        when each went."""
        sent: dict[int, float] = {}
        cpu = cpu_seconds(self.server)
        for _ in range(rounds):
            number = ViewerProcess.rounds = ViewerProcess.rounds + 1
            before()
            sent[number] = time.time()
            self.store.append(
                Event(EventKind.TEXT, {"text": f" mark{number}x"}, session_id=SESSION)
            )
            self.expect(f"done {number}")
        self.server_cpu_s += cpu_seconds(self.server) - cpu
        return sent

    def close(self, sent: dict[int, float]) -> list[float]:
        """The delays of the rounds in `sent`, over every viewer."""
        assert self.process.stdout is not None
        self.say("report")
        arrivals = json.loads(self.process.stdout.readline())
        self.process.wait(60)
        return [when - sent[n] for n in sent for when in arrivals[str(n)]]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fan_out(
    port: int,
    grants: list[list[str]],
    store: SessionStore,
    viewers: int,
    rounds: int,
    server: int,
) -> tuple[list[float], float]:
    """From an event's commit to each of `viewers` having it, over `rounds` events; and the
    server's CPU time per event (a figure the machine's load hardly moves)."""
    process = ViewerProcess(port, grants, store, viewers, server)
    process.rounds_of(1)  # the server settles after thousands of connections: not measured
    process.server_cpu_s = 0.0
    delays = process.close(process.rounds_of(rounds))
    return delays, process.server_cpu_s / rounds


def fan_out_with_catch_up(
    port: int,
    grants: list[list[str]],
    joiner: str,
    store: SessionStore,
    viewers: int,
    until: int,
    server: int,
    blocks: int = 4,
) -> dict[str, Any]:
    """The viewers' delays without, then with a late joiner starting a catch-up of `until`
    events of another session just before each event (the first catch-up cold: the feed reads
    and renders it), in alternating blocks of rounds so the machine's load weighs on both."""
    process = ViewerProcess(port, grants, store, viewers, server)
    late = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.share_viewers"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert late.stdin is not None and late.stdout is not None

    def tell(line: str) -> None:
        assert late.stdin is not None
        late.stdin.write(line + "\n")
        late.stdin.flush()

    tell(json.dumps({"join": True, "port": port, "grant": joiner, "until": until}))
    assert late.stdout.readline() == "ready\n"
    process.rounds_of(1)  # the server settles after the viewers' connections: not measured
    quiet: dict[int, float] = {}
    busy: dict[int, float] = {}
    catch_ups: list[float] = []
    for _ in range(blocks):
        quiet |= process.rounds_of(5)
        started = len(busy)
        busy |= process.rounds_of(5, before=lambda: tell("go"))
        catch_ups += [float(late.stdout.readline()) for _ in range(len(busy) - started)]
    tell("quit")
    late.wait(60)
    delays = process.close(quiet | busy)
    split = len(quiet) * viewers
    return {
        "quiet": delays[:split],
        "busy": delays[split:],
        "catch_ups": catch_ups,
    }


async def catch_up(port: int, grant: str, events: int) -> float:
    request = HTTPRequest(
        f"ws://127.0.0.1:{port}/ws?since=0", headers={"Origin": f"http://127.0.0.1:{port}"}
    )
    start = time.perf_counter()
    sock = await websocket_connect(request, subprotocols=["omk-share", "omk-grant." + grant])
    seen = 0
    while seen < events:
        seen = json.loads(await sock.read_message())["events"][-1]["seq"]
    sock.close()
    return time.perf_counter() - start


def write_history(store: SessionStore, session: str, events: int) -> int:
    """`events` of turns of streamed text between tool calls; the last one's seq."""
    store.open_session(session, f"{session}.ipynb")
    last = 0
    for i in range(events):
        kind, data = (
            (EventKind.TOOL_CALL, {"tool": "Bash", "summary": f"ls {i}"})
            if i % 4 == 0
            else (EventKind.TEXT, {"text": f"history {i} " * 4})
        )
        last = store.append(Event(kind, data, session_id=session, turn=1 + i // 40)).seq
    return last


def grants_for(codes: ShareCodes, session: str, links: int, per_link: int) -> list[list[str]]:
    """Grants as pages get them (a link's code exchanged for each), straight from the store:
    `per_link` for each of `links` links."""
    out = []
    for _ in range(links):
        code = codes.lookup(codes.new_code(session, "ro"))
        assert code is not None
        out.append([codes.grant(code) for _ in range(per_link)])
    return out


def measure(
    viewer_counts: tuple[int, ...] = (100, 500, 1000, 5000),
    history: int = 10_000,
    watching: int = 1000,
) -> dict[str, Any]:
    """Every share figure with the baseline measured in the same run: fan-out against one
    viewer; a catch-up against reading the same events straight from the store; the viewers'
    p99 during a late joiner's catch-ups against their p99 without; an answer and a prompt
    from the page against the kernel's poll period (their floor)."""
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
        [*SERVER, "--port", str(port)],
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
        grants = grants_for(codes, SESSION, LINKS, 4)
        out["server_cpu_s"] = {}

        def fan_outs(counts: tuple[int, ...]) -> None:
            for viewers in counts:
                delays, cpu = fan_out(
                    port, grants, store, viewers, 20 if viewers == 1 else 10, server.pid
                )
                out["fan_out"][viewers] = (statistics.median(delays), pct(delays, 0.99))
                out["server_cpu_s"][viewers] = cpu

        # The largest counts last: thousands of connections closing leave the server garbage
        # whose collection, a while later, would fall on whatever is measured next.
        fan_outs((1, *(n for n in viewer_counts if n <= watching)))
        last = write_history(store, HISTORY, history)
        alone = grants_for(codes, HISTORY, 1, 1)[0][0]
        out["catch_up_s"] = asyncio.run(catch_up(port, alone, last))
        started = time.perf_counter()
        direct = [event_message(e) for e in SessionStore(store_path).events(HISTORY)]
        out["store_read_s"] = time.perf_counter() - started
        out["history"] = len(direct)
        last = write_history(store, HISTORY_LIVE, history)
        joiner = grants_for(codes, HISTORY_LIVE, 1, 1)[0][0]
        during = fan_out_with_catch_up(port, grants, joiner, store, watching, last, server.pid)
        out["during_catch_up"] = {
            "viewers": watching,
            "quiet_p99_s": pct(during["quiet"], 0.99),
            "busy_p99_s": pct(during["busy"], 0.99),
            "catch_ups": during["catch_ups"],
        }
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
        fan_outs(tuple(n for n in viewer_counts if n > watching))  # last: see above
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
    d = r["during_catch_up"]
    print(
        f"{d['viewers']} viewers' p99 while a late joiner catches up on {r['history']:,} events: "
        f"{1000 * d['busy_p99_s']:.1f} ms (without: {1000 * d['quiet_p99_s']:.1f} ms; "
        f"catch-ups meanwhile: {', '.join(f'{1000 * s:.0f} ms' for s in d['catch_ups'])})"
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
