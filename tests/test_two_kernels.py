"""One notebook open in two kernels at once: both keep working, turns run one at a time, each
stored once and whole (no interleaved sequence numbers), and a kernel that waits for the other
can be stopped.

Real kernels, the real claude CLI, the scripted fake model streaming slowly.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore
from omnikernel.store.turnlock import TurnLock, lock_path

from .conftest import require_claude

SCENARIO = {
    "rules": [
        # About 6 s each: 20 chunks 0.2 s apart, then 2 s before the answer ends.
        {"match": "slowly", "steps": [{"text": "word " * 60, "chunk_delay": 0.2}]},
        {"match": "very long", "steps": [{"text": "word " * 300, "chunk_delay": 0.2}]},
        {"match": "remember", "steps": [{"text": "Noted: the word is heron."}]},
    ]
}
WAITING = "Another turn of this session is running"


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def env_for(model: FakeModelServer) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        "OMNIKERNEL_SESSION_ID": "shared",
    }


def stored(tmp_path: Path) -> list[Event]:
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    try:
        return list(store.events("shared"))
    finally:
        store.close()


def assert_turns_whole(events: list[Event]) -> None:
    """Sequence numbers 1..n; each turn started and ended once, its events one run of seq."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    starts = [e.turn for e in events if e.kind == EventKind.TURN_START]
    ends = [e.turn for e in events if e.kind == EventKind.TURN_END]
    assert sorted(starts) == sorted(set(starts)) == sorted(ends), (starts, ends)
    for turn in starts:
        seqs = [e.seq for e in events if e.turn == turn]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"turn {turn} interleaved"


def test_two_kernels_on_one_session_run_their_turns_one_after_the_other(
    model, workdir, tmp_path, start_kernel
):
    first = start_kernel(workdir, **env_for(model))
    second = start_kernel(workdir, **env_for(model))
    one = first.kc.execute("Write slowly, please.")
    time.sleep(0.5)  # the first takes the session's turn; the second must wait for it
    two = second.kc.execute("Write slowly, please.")
    done_one = first.collect(one, timeout=180)
    done_two = second.collect(two, timeout=180)
    assert done_one.status == "ok" and done_two.status == "ok", done_one.text + done_two.text
    events = stored(tmp_path)
    assert_turns_whole(events)  # fails without the turn lock: the two turns interleave
    assert WAITING in done_two.text and "The stop button stops waiting" in done_two.text
    assert "word word" in done_one.text and "word word" in done_two.text
    starts = [e for e in events if e.kind == EventKind.TURN_START]
    assert len(starts) == 2 and starts[0].data["kernel"] != starts[1].data["kernel"]
    # The waiting kernel starts after the other's end is stored, not on a timeout (it polls
    # every 50 ms; how soon is a figure for `make bench`, not a test on a loaded machine).
    end_one = next(e for e in events if e.kind == EventKind.TURN_END)
    print(f"waiting kernel started {starts[1].ts - end_one.ts:.3f} s after the other's end")
    assert 0 <= starts[1].ts - end_one.ts < 30
    # Both go on working, each turn stored once.
    assert first.execute("Please remember a word.").status == "ok"
    assert second.execute("Please remember a word.").status == "ok"
    assert_turns_whole(stored(tmp_path))
    assert len([e for e in stored(tmp_path) if e.kind == EventKind.TURN_START]) == 4


def test_a_kernel_waiting_for_the_other_one_stops_waiting_on_the_stop_button(
    model, workdir, tmp_path, start_kernel
):
    first = start_kernel(workdir, **env_for(model))
    second = start_kernel(workdir, **env_for(model))
    long_turn = first.kc.execute("Write a very long answer, please.")
    time.sleep(0.5)
    seen: list[str] = []
    waiting = second.kc.execute("Please remember a word.")
    deadline = time.monotonic() + 60
    while WAITING not in "".join(seen):
        assert time.monotonic() < deadline, "the second kernel never said it waits"
        msg = second.kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == waiting and msg["msg_type"] == "display_data":
            seen.append(msg["content"]["data"].get("text/plain", ""))
    stop_pressed = time.monotonic()
    second.km.interrupt_kernel()
    stopped = second.collect(waiting, timeout=30)
    assert time.monotonic() - stop_pressed < 5  # the wait ends at once, not with the turn
    assert stopped.status == "error" and stopped.reply["ename"] == "KeyboardInterrupt"
    assert "Stopped waiting" in stopped.text
    # Nothing of the stopped prompt was stored; the first kernel's turn goes on, then ends.
    assert not any(
        e.data.get("prompt", "").startswith("Please remember")
        for e in stored(tmp_path)
        if e.kind == EventKind.TURN_START
    )
    first.km.interrupt_kernel()
    assert first.collect(long_turn, timeout=60).status == "error"
    again = second.execute("Please remember a word.")
    assert again.status == "ok" and "heron" in again.text, again.text
    assert WAITING not in again.text
    assert_turns_whole(stored(tmp_path))


def test_a_turn_lock_is_released_when_its_holder_dies(tmp_path):
    """The operating system drops the flock of a process that exits, however it exits."""
    import subprocess
    import sys

    path = lock_path(tmp_path / "sessions.sqlite3", "a/b c")
    assert path.parent == tmp_path / "locks" and "/" not in path.name[:-10]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from omnikernel.store.turnlock import TurnLock; from pathlib import Path\n"
            f"lock = TurnLock(Path({str(path)!r})); assert lock.try_acquire(); lock._note('kernel X')\n"
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    mine = TurnLock(path)
    assert not mine.try_acquire() and mine.holder() == "kernel X"
    holder.kill()
    holder.wait(10)
    assert mine.try_acquire()
    other = TurnLock(path)  # in one process too, a second holder waits for the first
    assert not other.try_acquire()
    mine.release()
    assert other.try_acquire()
    other.release()


def test_a_turn_cancelled_without_a_stop_does_not_hold_the_session(model, tmp_path):
    """A consumer that cancels a turn and never calls `stop_turn` (a script, a timeout) would
    keep the turn lock: the next prompt ends that turn first, then runs."""
    import asyncio
    import contextlib

    from omnikernel.gateway.upstream import UpstreamConfig
    from omnikernel.session.core import AgentSession

    work = tmp_path / "work"
    work.mkdir()
    store = SessionStore(tmp_path / "store.sqlite3")
    session = AgentSession(
        store=store,
        session_id="solo",
        notebook=str(work / "solo.ipynb"),
        cwd=work,
        state_dir=tmp_path / "state",
        auto_approve=True,
        upstream_config=UpstreamConfig(anthropic_base_url=model.base_url, anthropic_api_key="k"),
    )

    async def scenario() -> list[Event]:
        streaming = asyncio.Event()

        async def consume() -> None:
            async for event in session.run_prompt("Write slowly, please."):
                if event.kind == EventKind.TEXT:
                    streaming.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(streaming.wait(), 60)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # No stop_turn: the next prompt must not wait forever for this kernel's own lock.
        try:
            return [e async for e in session.run_prompt("Please remember a word.")]
        finally:
            await session.close()

    try:
        events = asyncio.run(asyncio.wait_for(scenario(), 120))
        assert events[-1].data["status"] == "completed"
        stored_events = list(store.events("solo"))
        assert_turns_whole(stored_events)
        ends = {e.turn: e.data["status"] for e in stored_events if e.kind == EventKind.TURN_END}
        assert ends == {1: "interrupted", 2: "completed"}
    finally:
        store.close()


def test_prune_keeps_a_session_a_kernel_is_running_a_turn_of(tmp_path, capsys):
    from omnikernel.cli import main as cli
    from omnikernel.events import text

    store = SessionStore(tmp_path / "sessions.sqlite3")
    store.open_session("busy", "busy.ipynb")
    store.append(text("hello").stamped(session_id="busy", turn=1))
    args = ["--store", str(store.path), "prune", "--state-dir", str(tmp_path / "state"), "busy"]
    running = TurnLock(lock_path(store.path, "busy"))
    assert running.try_acquire()
    running._note("kernel 42 on here")
    assert cli.main(args) == 0
    assert "kept busy: a kernel is running a turn of it now (kernel 42 on here)" in (
        capsys.readouterr().out
    )
    assert store.session("busy") is not None
    running.release()
    assert cli.main(args) == 0
    assert "removed busy" in capsys.readouterr().out
    assert store.session("busy") is None and not running.path.exists()
    store.close()
