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


OLD_SESSIONS = (
    "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, notebook TEXT NOT NULL, "
    "created REAL NOT NULL, updated REAL NOT NULL)"
)


def open_at_once(openers: int, open_one) -> list[BaseException]:
    """Run `open_one` from `openers` threads released together; the errors they raised."""
    import threading

    start, errors = threading.Barrier(openers), []

    def run() -> None:
        start.wait()
        try:
            open_one()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_many_openers_of_an_old_store_add_its_missing_column_once(tmp_path):
    """Kernels, the server extension and the share server open one store file at the same
    moment. A store from before forks lacks `sessions.origin`: every opener saw it missing and
    added it, and all but the first died ("duplicate column name"; it broke a docs build)."""
    import sqlite3

    from omnikernel.store.connect import _columns

    def old_store(path):
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")  # as every store has been
        db.execute(OLD_SESSIONS)
        db.commit()
        db.close()

    def naive_open(path):  # the way it was: check, then add
        db = sqlite3.connect(path, isolation_level=None, timeout=5)
        if "origin" not in _columns(db, "sessions"):
            db.execute("ALTER TABLE sessions ADD COLUMN origin TEXT NOT NULL DEFAULT ''")
        db.close()

    racy = [tmp_path / f"naive-{i}.sqlite3" for i in range(20)]
    for path in racy:
        old_store(path)
    failures = [e for p in racy for e in open_at_once(8, lambda p=p: naive_open(p))]
    assert any("duplicate column" in str(e) for e in failures)  # the race is real

    from omnikernel.store.shares import ShareCodes

    for i in range(10):  # a brand-new file, opened by both kinds of opener at once
        fresh, kinds = tmp_path / f"new-{i}.sqlite3", iter([SessionStore, ShareCodes] * 4)
        assert open_at_once(8, lambda p=fresh, k=kinds: next(k)(p).close()) == []
    fixed = [tmp_path / f"store-{i}.sqlite3" for i in range(10)]
    for path in fixed:
        old_store(path)
        assert open_at_once(8, lambda p=path: SessionStore(p).close()) == []
        db = sqlite3.connect(path)
        assert "origin" in _columns(db, "sessions")
        db.close()
