"""Group commit: a fast stream of events is committed in batches, and each batch is shown only
after its commit, so a killed writer loses nothing that was shown and a reader never sees a gap.

The stream is real: Claude Code's own output for a long answer from the scripted model, read by
the session as in a kernel. "Shown" is what `AgentSession.run_prompt` hands on (the kernel shows
exactly that); "committed" is what another connection to the store file can read.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.redact import Redactor
from omnikernel.store.sessions import SessionStore
from omnikernel.view import render

from .conftest import REPO, require_cli

LONG = "stream a long answer"
WORDS = 3000
SCENARIO = {"rules": [{"match": LONG, "steps": [{"text": "word " * WORDS}]}]}


# -- the store -------------------------------------------------------------------------------


def test_a_batch_gets_consecutive_numbers_after_single_appends(tmp_path: Path):
    store = SessionStore(tmp_path / "s.sqlite3", redactor=Redactor())
    store.open_session("s", "n.ipynb")
    first = store.append(Event(EventKind.TEXT, {"text": "a"}, session_id="s", turn=1))
    batch = store.append_many(
        [Event(EventKind.TEXT, {"text": t}, session_id="s", turn=1) for t in "bcd"]
    )
    last = store.append(Event(EventKind.TEXT, {"text": "e"}, session_id="s", turn=1))
    assert [first.seq, *(e.seq for e in batch), last.seq] == [1, 2, 3, 4, 5]
    assert [e.data["text"] for e in store.events("s")] == list("abcde")
    assert store.append_many([]) == []


def test_a_batch_is_redacted_before_it_is_written(tmp_path: Path):
    redactor = Redactor()
    redactor.add("sk-secret-0123456789abcdef", "credential")
    store = SessionStore(tmp_path / "s.sqlite3", redactor=redactor)
    store.open_session("s", "n.ipynb")
    (shown,) = store.append_many(
        [Event(EventKind.TEXT, {"text": "key sk-secret-0123456789abcdef"}, session_id="s")]
    )
    raw = sqlite3.connect(tmp_path / "s.sqlite3").execute("SELECT data FROM events").fetchall()
    assert "sk-secret" not in shown.data["text"] and "sk-secret" not in str(raw)


def test_a_refused_batch_stores_none_of_it(tmp_path: Path):
    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("s", "n.ipynb")
    store.append(Event(EventKind.TEXT, {"text": "kept"}, session_id="s"))
    # The third row of the batch is refused (as a full disk would refuse it): the first two
    # must not be stored either.
    with sqlite3.connect(tmp_path / "s.sqlite3") as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.data LIKE '%\"z\"%' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(sqlite3.DatabaseError, match="refused"):
        store.append_many([Event(EventKind.TEXT, {"text": t}, session_id="s") for t in "xyz"])
    assert [e.data["text"] for e in store.events("s")] == ["kept"]
    (again,) = store.append_many([Event(EventKind.TEXT, {"text": "next"}, session_id="s")])
    assert again.seq == 2  # no number was used up


# -- the cell --------------------------------------------------------------------------------


class Timers:
    """The event loop's `call_later`, run by hand."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Any]] = []

    def schedule(self, delay: float, callback: Any) -> Timers:
        self.due.append((delay, callback))
        return self

    def cancel(self) -> None:
        self.due.clear()

    def fire(self) -> None:
        due, self.due = self.due, []
        for _, callback in due:
            callback()


def test_a_fast_stream_is_written_in_a_few_messages_and_none_of_it_is_lost():
    writes: list[str] = []
    now = [0.0]
    timers = Timers()
    view = render.CellView(
        lambda *a, **k: None,
        lambda *a, **k: None,
        stream=writes.append,
        clock=lambda: now[0],
        schedule=timers.schedule,
    )
    deltas = [f"w{i} " for i in range(1000)]
    for i, delta in enumerate(deltas):
        now[0] = i * 0.0001  # 10,000 deltas a second
        view.show(Event(EventKind.TEXT, {"text": delta}))
    assert len(writes) <= 3  # the first delta at once, then one write per interval
    timers.fire()  # the stream pauses: what is behind shows without waiting for more
    assert "".join(writes) == "".join(deltas)
    view.show(Event(EventKind.TEXT, {"text": "end"}))
    view.flush_text()
    assert "".join(writes) == "".join(deltas) + "end\n" and not timers.due


def test_a_paused_stream_updates_its_display_by_the_timer():
    updates: list[str] = []
    now = [0.0]
    timers = Timers()
    view = render.CellView(
        lambda b, **k: updates.append(b["text/plain"]),
        lambda b, **k: updates.append(b["text/plain"]),
        clock=lambda: now[0],
        schedule=timers.schedule,
    )
    for i, delta in enumerate(["Hel", "lo", " wor", "ld"]):
        now[0] = i * 0.01
        view.show(Event(EventKind.TEXT, {"text": delta}))
    assert updates == ["Hel"] and timers.due  # throttled, an update is due
    timers.fire()
    assert updates[-1] == "Hello world"


def test_a_slow_render_spaces_the_display_updates(monkeypatch: pytest.MonkeyPatch):
    renders: list[str] = []

    def slow_bundle(text: str, images: Any = None) -> dict[str, str]:
        renders.append(text)
        time.sleep(0.03)  # a long Markdown answer's render
        return {"text/plain": text}

    monkeypatch.setattr(render, "agent_bundle", slow_bundle)
    now = [0.0]
    view = render.CellView(lambda *a, **k: None, lambda *a, **k: None, clock=lambda: now[0])
    for at, delta in [(0.0, "a"), (0.11, "b"), (0.2, "c"), (1.0, "d")]:
        now[0] = at
        view.show(Event(EventKind.TEXT, {"text": delta}))
    # Renders of >= 30 ms take at most 20% of the time: >= 150 ms apart, so none at 110 ms
    # (the fixed 100 ms interval would render "ab" there).
    assert renders[0] == "a" and renders[1] in ("abc", "abcd") and len(renders) <= 3
    view.flush_text()
    assert renders[-1] == "abcd"


# -- the stream, end to end ------------------------------------------------------------------


def session_for(tmp_path: Path, model: FakeModelServer, harness: str) -> AgentSession:
    return AgentSession(
        store=SessionStore(tmp_path / "store.sqlite3"),
        session_id="gc",
        notebook=str(tmp_path / "gc.ipynb"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        harness=harness,
        upstream_config=UpstreamConfig(
            anthropic_base_url=model.base_url,
            anthropic_api_key="gc-key",
            openai_base_url=model.base_url + "/v1",
            openai_api_key="gc-key",
        ),
        user_policy=tmp_path / "none.toml",
    )


@pytest.mark.process
@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_every_event_is_committed_before_it_is_shown(tmp_path: Path, harness: str):
    require_cli(harness)
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        session = session_for(tmp_path, model, harness)
        batches: list[int] = []
        append_many = session.store.append_many

        def counted(events: Any) -> list[Event]:
            batches.append(len(events))
            return append_many(events)

        session.store.append_many = counted  # type: ignore[method-assign]
        # Another connection sees only what is committed (WAL): the share feed's view.
        reader = sqlite3.connect(tmp_path / "store.sqlite3")

        async def scenario() -> list[Event]:
            shown = []
            async for event in session.run_prompt(LONG):
                row = reader.execute(
                    "SELECT kind, data FROM events WHERE session_id = ? AND seq = ?",
                    (event.session_id, event.seq),
                ).fetchone()
                assert row is not None, f"shown before its commit: {event}"
                assert (row[0], json.loads(row[1])) == (event.kind.value, event.data)
                count, top = reader.execute(
                    "SELECT COUNT(*), MAX(seq) FROM events WHERE session_id = ?",
                    (event.session_id,),
                ).fetchone()
                assert count == top, "a reader saw a gap in the sequence numbers"
                if not shown:
                    # A slow cell (blocking, as rendering does): the deltas pile up in the pipe.
                    time.sleep(0.2)  # noqa: ASYNC251
                shown.append(event)
            await session.close()
            return shown

        try:
            shown = asyncio.run(scenario())
        finally:
            session.kill_now()
    texts = [e for e in shown if e.kind == EventKind.TEXT]
    assert "".join(e.data["text"] for e in texts).split() == ["word"] * WORDS
    assert shown[-1].kind == EventKind.TURN_END and shown[-1].data["status"] == "completed"
    assert max(batches) > 1, batches  # the deltas that piled up were committed together
    seqs = [e.seq for e in shown]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


#: The writer: a session streaming the long answer, printing each event it hands on (shows).
WRITER = """
import asyncio, json, sys
from pathlib import Path
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore

tmp, base_url, prompt = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
session = AgentSession(
    store=SessionStore(tmp / "store.sqlite3"), session_id="gc", notebook=str(tmp / "gc.ipynb"),
    cwd=tmp, state_dir=tmp / "state", harness="claude",
    upstream_config=UpstreamConfig(anthropic_base_url=base_url, anthropic_api_key="gc-key"),
    user_policy=tmp / "none.toml",
)

async def main():
    async for event in session.run_prompt(prompt):
        print(json.dumps([event.seq, event.kind.value, event.data]), flush=True)

asyncio.run(main())
"""


@pytest.mark.process
@pytest.mark.parametrize("kill_after", [50, 400])
def test_a_writer_killed_mid_batch_loses_nothing_it_showed(tmp_path: Path, kill_after: int):
    require_cli("claude")
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), model.base_url, LONG],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own group: the kill takes its CLI along
        )
        shown: list[list[Any]] = []
        try:
            assert writer.stdout is not None
            deadline = time.monotonic() + 120
            texts = 0
            while texts < kill_after and time.monotonic() < deadline:
                line = writer.stdout.readline()
                if not line:
                    break
                shown.append(json.loads(line))
                texts += shown[-1][1] == "text"
            os.killpg(writer.pid, signal.SIGKILL)  # mid-stream: a batch is held or committing
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                os.killpg(writer.pid, signal.SIGKILL)
                writer.wait(timeout=30)
    assert texts == kill_after, f"the writer ended before {kill_after} text events: {shown[-3:]}"
    stored = {
        seq: [seq, kind, json.loads(data)]
        for seq, kind, data in sqlite3.connect(tmp_path / "store.sqlite3").execute(
            "SELECT seq, kind, data FROM events WHERE session_id = 'gc' ORDER BY seq"
        )
    }
    missing = [event for event in shown if stored.get(event[0]) != event]
    assert not missing, f"shown but lost: {missing[:3]}"
    assert list(stored) == list(range(1, len(stored) + 1))  # no gap
    kinds = [event[1] for event in stored.values()]
    assert "turn_end" not in kinds  # killed mid-turn
    assert kinds.count("text") < WORDS  # mid-stream


# -- the cell, in a kernel -------------------------------------------------------------------


@pytest.mark.kernel
def test_a_kernel_shows_a_fast_stream_whole_in_a_few_messages(tmp_path: Path, start_kernel):
    require_cli("claude")
    work = tmp_path / "work"
    work.mkdir()
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        kernel = start_kernel(work, ANTHROPIC_BASE_URL=model.base_url, ANTHROPIC_API_KEY="gc-key")
        # A console (no cell id): the text as stream output, coalesced.
        console = kernel.execute(LONG)
        assert console.status == "ok", console.text
        streamed = [m["content"]["text"] for m in console.outputs if m["msg_type"] == "stream"]
        assert "".join(streamed).split() == ["word"] * WORDS
        # A notebook's cell (JupyterLab sends its id): one display, updated in place.
        content = {"code": LONG, "silent": False, "store_history": True}
        request = kernel.kc.session.msg("execute_request", content, metadata={"cellId": "c1"})
        kernel.kc.shell_channel.send(request)
        cell = kernel.collect(request["header"]["msg_id"])
        assert cell.status == "ok", cell.text
        text = [
            m
            for m in cell.outputs
            if m["content"].get("transient", {}).get("display_id", "").startswith("omnikernel-text")
        ]
        assert text[-1]["content"]["data"]["text/plain"].split() == ["word"] * WORDS
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    (session,) = [s["session_id"] for s in store.sessions()]
    deltas = [
        sum(1 for _ in store.events(session, kinds=(EventKind.TEXT,), turn=t)) for t in (1, 2)
    ]
    store.close()
    # Every delta is stored; the cell got a handful of messages for them.
    assert min(deltas) > 100 and len(streamed) < deltas[0] / 5 and len(text) < deltas[1] / 5
