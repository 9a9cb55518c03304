"""The session store: durable, ordered, gap-free, shared between processes."""

import sqlite3
import subprocess
import sys

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore


def stamped(event: Event, session: str = "s1", turn: int = 1) -> Event:
    return event.stamped(session_id=session, harness="claude", turn=turn, cell="c1")


def test_append_assigns_gap_free_sequence_per_session(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("s1", "/nb/a.ipynb")
    store.open_session("s2", "/nb/b.ipynb")
    seqs = [store.append(stamped(ev.text(str(i)))).seq for i in range(3)]
    other = store.append(stamped(ev.text("x"), session="s2")).seq
    assert seqs == [1, 2, 3]
    assert other == 1
    assert [e.data["text"] for e in store.events("s1")] == ["0", "1", "2"]
    assert [e.seq for e in store.events("s1", since=2)] == [3]


def test_events_survive_reopening_and_sequence_continues(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = SessionStore(path)
    store.open_session("s1", "nb")
    store.append(stamped(ev.tool_call("t1", "Bash", "exec", "ls", {"command": "ls"})))
    store.close()
    again = SessionStore(path)
    (event,) = list(again.events("s1"))
    assert event.kind == EventKind.TOOL_CALL and event.data["input"] == {"command": "ls"}
    assert again.append(stamped(ev.text("more"))).seq == 2
    assert again.last_turn("s1") == 1


def test_wal_mode_lets_another_process_read_while_open(tmp_path):
    path = tmp_path / "s.sqlite3"
    store = SessionStore(path)
    store.open_session("s1", "nb")
    store.append(stamped(ev.text("hello")))
    (mode,) = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    code = (
        "import sys; from omnikernel.store.sessions import SessionStore; "
        f"print(next(SessionStore({str(path)!r}).events('s1')).data['text'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello"


def test_filters_by_kind_and_turn_and_lists_sessions(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("s1", "nb")
    store.append(stamped(ev.text("a"), turn=1))
    store.append(stamped(ev.notice("n"), turn=2))
    store.append(stamped(ev.text("b"), turn=2))
    assert [e.data["text"] for e in store.events("s1", kinds=(EventKind.TEXT,))] == ["a", "b"]
    assert [e.kind for e in store.events("s1", turn=2)] == [EventKind.NOTICE, EventKind.TEXT]
    (row,) = store.sessions()
    assert row["session_id"] == "s1" and row["events"] == 3 and row["notebook"] == "nb"


def test_event_round_trips_through_dict():
    event = stamped(ev.error("boom", "do this")).stamped(seq=7)
    assert Event.from_dict(event.to_dict()) == event
