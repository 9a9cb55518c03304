"""`python -m benchmarks.soak [--turns 200] [--time-limit S]`: many turns with faults injected.

One session (real CLIs, real sandbox, the scripted model) runs turns round-robin over the
installed harnesses; most turns get a random fault: the harness process killed mid-stream, the
upstream answering 529 (retried by the gateway) or failing for good, a slow stream, a stop
(interrupt) mid-stream. After each fault the next turn must complete. At the end every event a
turn yielded is compared with the store. Reports turns completed, faults survived, events lost
(the promise: 0, with sequence numbers continuous and every turn ended exactly once) and the
growth of this process's memory (the session runs in it, as in a kernel). Bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from pathlib import Path

import psutil

from omnikernel.events import Event, EventKind
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.harnesses import discover
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore

SCENARIO = {"rules": [{"match": "soak", "steps": [{"text": "ok, {prompt}"}]}]}
SLOW = {"text": "word " * 120, "chunk_delay": 0.03}
OVERLOADED = {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}
FAULTS = ("none", "kill", "retry", "upstream_down", "slow", "interrupt")


async def one_turn(
    session: AgentSession, model: FakeModelServer, name: str, n: int, fault: str
) -> list[Event]:
    """Run turn `n` on `name` with `fault`; return every event it yielded (all stored)."""
    prompt = f"soak turn {n}"
    if fault in ("kill", "interrupt", "slow"):
        model.enqueue(SLOW)
    elif fault == "retry":
        model.enqueue(OVERLOADED, OVERLOADED)
    elif fault == "upstream_down":
        model.enqueue(*[OVERLOADED] * 16)
    got: list[Event] = []
    streaming = asyncio.Event()

    async def consume() -> None:
        async for event in session.run_prompt(prompt, harness=name):
            got.append(event)
            if event.kind == EventKind.TEXT:
                streaming.set()

    task = asyncio.ensure_future(consume())
    if fault in ("kill", "interrupt"):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(streaming.wait()), 60)
        if fault == "kill" and (agent := session._harnesses.get(name)) is not None:
            agent.kill_now()
        elif fault == "interrupt" and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            got += await session.stop_turn(name)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 180)
    model.reset()  # what a fault left unserved in the queue
    return got


def size_on_disk(database: Path) -> int:
    """A SQLite file's size with its write-ahead log and shared-memory index."""
    return sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))


async def soak(names: list[str], turns: int, time_limit: float, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    me = psutil.Process()
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeModelServer(Scenario.from_dict(SCENARIO)) as model,
    ):
        work = Path(tmp) / "work"
        work.mkdir()
        store = SessionStore(Path(tmp) / "store.sqlite3")
        session = AgentSession(
            store=store,
            session_id="soak",
            notebook=str(work / "soak.ipynb"),
            cwd=work,
            state_dir=Path(tmp) / "state",
            harness=names[0],
            auto_approve=True,
            upstream_config=UpstreamConfig(
                anthropic_base_url=model.base_url,
                anthropic_api_key="soak",
                openai_base_url=model.base_url + "/v1",
                openai_api_key="soak",
            ),
        )
        session.gateway.backoff_s = 0.05  # the retries are the point, not the waiting
        yielded: list[Event] = []
        done, faults, survived, statuses = 0, 0, 0, {}
        pending_fault = False
        started = time.monotonic()
        rss_start = 0
        try:
            for n in range(1, turns + 2):
                last = n > turns or time.monotonic() - started > time_limit
                if last and not pending_fault:
                    break
                name = names[n % len(names)]
                fault = "none" if n == 1 or pending_fault or last else rng.choice(FAULTS)
                events = await one_turn(session, model, name, n, fault)
                yielded += events
                status = events[-1].data.get("status") if events else "none"
                statuses[fault] = statuses.get(fault, 0) + 1
                if n == 1:
                    rss_start = me.memory_info().rss  # after the first harness start
                if status == "completed":
                    done += 1
                    if pending_fault:
                        survived += 1
                pending_fault = fault != "none"
                faults += pending_fault
                if last:
                    break
        finally:
            await session.close()
        rss_end = me.memory_info().rss
        store_bytes = size_on_disk(store.path)
        stored = {e.seq: e for e in store.events("soak")}
        lost = [e for e in yielded if stored.get(e.seq) != e]
        seqs = sorted(stored)
        starts = [e.turn for e in stored.values() if e.kind == EventKind.TURN_START]
        ends = [e.turn for e in stored.values() if e.kind == EventKind.TURN_END]
        return {
            "turns": len(starts),
            "completed": done,
            "faults": faults,
            "survived": survived,
            "events": len(stored),
            "lost": len(lost),
            "seq_continuous": seqs == list(range(1, len(seqs) + 1)),
            "every_turn_ended_once": sorted(starts) == sorted(ends) == sorted(set(ends)),
            "rss_growth_mb": (rss_end - rss_start) / 2**20,
            "store_mb": store_bytes / 2**20,
            "seconds": time.monotonic() - started,
            "by_fault": statuses,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds (default 900)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("harnesses", nargs="*", help="default: claude, codex, pi if installed")
    args = parser.parse_args()
    available = discover()
    names = args.harnesses or [
        n for n in ("claude", "codex", "pi") if n in available and available[n].find_binary()
    ]
    if not names:
        raise SystemExit("no harness CLI installed: run `make harness-clis`")
    r = asyncio.run(soak(names, args.turns, args.time_limit, args.seed))
    print(
        f"soak over {', '.join(names)}: {r['turns']} turns in {r['seconds']:.0f} s "
        f"(faults by kind: {r['by_fault']})"
    )
    print(f"  turns completed   {r['completed']}")
    print(f"  faults survived   {r['survived']} of {r['faults']} (the next turn completed)")
    print(
        f"  events stored     {r['events']}, lost {r['lost']} "
        f"({'ok' if r['lost'] == 0 else 'EVENTS LOST'})"
    )
    print(
        f"  seq continuous    {r['seq_continuous']}; every turn ended once: "
        f"{r['every_turn_ended_once']}"
    )
    print(
        f"  memory growth     {r['rss_growth_mb']:+.1f} MB (session process RSS; the store "
        f"on disk: {r['store_mb']:.1f} MB)"
    )
    if r["lost"] or not r["seq_continuous"] or not r["every_turn_ended_once"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
