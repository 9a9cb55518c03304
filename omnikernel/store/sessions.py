"""The session store: every event, appended durably before it is shown.

One SQLite file (WAL mode) holds all sessions, so the kernel writes and the jupyter server
extension reads the same history concurrently. Invariants:

- `append` assigns the next sequence number of the session inside the write transaction, so
  sequence numbers are gap-free and increasing even across kernel restarts.
- An event is committed before `append` returns; callers show it only afterwards. With WAL and
  ``synchronous=NORMAL`` a committed event survives a killed kernel (not a power cut): the
  trade-off that keeps a stream of text deltas cheap. A fast stream is group-committed
  (`append_many`: one transaction for a batch, shown after its commit), so its cost per event
  is a fraction of one commit's; a batch is stored whole or not at all, so a reader (the share
  feed, `%history`, an export) never sees a gap in the sequence numbers.
- An ``approval_decision`` answered after a restart is appended only if its request has none
  yet, checked in the same transaction (`append_decision`): the first answer wins across
  processes.
- No credential the kernel knows is stored: every event passes the store's `Redactor` in the
  one append path (`_append_new`), and what `append` returns (what callers show) is the
  redacted event. The session teaches the redactor each credential as it learns it (see
  `omnikernel.store.redact`); exports, `omnikernel attach` and the share page read only stored
  events, so they never see one either.
- Events are never updated or deleted; harness state that must survive a restart (such as the
  CLI's own conversation id) is read back from the events. A fork copies a session's events
  under a new session id; the original is untouched.
- ``jupyter_sessions`` is how the server extension tells a kernel which notebook it runs (see
  `jupyter_ext.notebooks`).
- ``notebooks`` binds a notebook's identity (the file id the server extension passes the kernel,
  which follows renames and moves) to the session it uses now; see `omnikernel.session.identity`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir

from omnikernel.events import Event, EventKind
from omnikernel.store.connect import add_missing_column, connect
from omnikernel.store.redact import Redactor


class StoreUnavailableError(RuntimeError):
    """The session store refused a write; the message says why and what to do."""

    def __init__(self, path: Path, cause: Exception):
        why = str(cause)
        if "locked" in why or "busy" in why:
            hint = (
                "another process holds it locked (another kernel, or a tool with the file "
                "open): wait for it or close it"
            )
        elif "full" in why:
            hint = "the disk is full: free some space"
        else:
            hint = "check that the file and its folder are writable"
        super().__init__(
            f"The session store {path} could not be written ({why}): {hint}, then run the "
            f"cell again. Nothing was half-written: the refused write was rolled back, and "
            f"what the store holds is whole."
        )


SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    notebook   TEXT NOT NULL,
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    origin     TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS notebooks (
    notebook_id TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL,
    how         TEXT NOT NULL,
    updated     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jupyter_sessions (
    jupyter_session TEXT PRIMARY KEY,
    notebook_id     TEXT NOT NULL,
    path            TEXT NOT NULL,
    updated         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts         REAL NOT NULL,
    kind       TEXT NOT NULL,
    harness    TEXT NOT NULL,
    turn       INTEGER NOT NULL,
    cell       TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
"""


def default_store_path() -> Path:
    """`<jupyter data dir>/omnikernel/sessions.sqlite3`. The kernel, the command line and the
    server extension choose their store in their settings (``OMNIKERNEL_STORE`` among them,
    see `omnikernel.kernel.settings`) and pass it here."""
    return Path(jupyter_data_dir()) / "omnikernel" / "sessions.sqlite3"


class SessionStore:
    """Append-only event log of all sessions in one SQLite file."""

    def __init__(self, path: Path | str | None = None, redactor: Redactor | None = None):
        self.path = Path(path) if path else default_store_path()
        #: What every appended event passes before it is written (empty: a reader's store).
        self.redactor = redactor if redactor is not None else Redactor()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the kernel's threads (widget handlers may run on subshell
        # threads); the lock serialises writes, WAL lets other processes read meanwhile.
        self._db = connect(self.path)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        # Stores written before forks existed.
        add_missing_column(self._db, "sessions", "origin", "TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def open_session(self, session_id: str, notebook: str) -> None:
        """Create the session's row, or mark it used. An existing row keeps its notebook path:
        the server extension keeps that current through renames (`set_notebook_path`), while a
        kernel only knows the path it started with."""
        now = time.time()
        with self._lock, self._writing():
            self._db.execute(
                "INSERT INTO sessions (session_id, notebook, created, updated) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT(session_id) DO UPDATE SET updated=excluded.updated",
                (session_id, notebook, now, now),
            )

    def set_notebook_path(self, session_id: str, notebook: str) -> None:
        """Record where a session's notebook lives now (after a rename or move)."""
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET notebook = ? WHERE session_id = ?", (notebook, session_id)
            )

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One session's row (as `sessions()` lists it, plus ``origin``), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT s.session_id, s.notebook, s.created, s.updated, "
                "(SELECT COUNT(*) FROM events e WHERE e.session_id = s.session_id), "
                "(SELECT COALESCE(MAX(turn), 0) FROM events e WHERE e.session_id = s.session_id), "
                "s.origin FROM sessions s WHERE s.session_id = ?",
                (session_id,),
            ).fetchone()
        keys = ("session_id", "notebook", "created", "updated", "events", "turns", "origin")
        return dict(zip(keys, row, strict=True)) if row else None

    def fork_session(self, source: str, new_id: str, notebook: str) -> int:
        """Start session `new_id` with a copy of `source`'s events (same sequence numbers, so
        it continues where `source` stood); `source` is untouched. Returns the events copied."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO sessions (session_id, notebook, created, updated, origin) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (new_id, notebook, now, now, source),
                )
                copied = self._db.execute(
                    "INSERT INTO events SELECT ?, seq, ts, kind, harness, turn, cell, data "
                    "FROM events WHERE session_id = ? ORDER BY seq",
                    (new_id, source),
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back itself on a full disk
                    self._db.execute("ROLLBACK")
                raise
        return copied

    def bind_notebook(self, notebook_id: str, session_id: str, how: str) -> None:
        """From now on the notebook `notebook_id` uses `session_id` (`how` says why)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO notebooks VALUES (?, ?, ?, ?) ON CONFLICT(notebook_id) DO UPDATE "
                "SET session_id=excluded.session_id, how=excluded.how, updated=excluded.updated",
                (notebook_id, session_id, how, time.time()),
            )

    def record_jupyter_session(self, jupyter_session: str, notebook_id: str, path: str) -> None:
        """The server extension notes which notebook a Jupyter session names now."""
        with self._lock:
            self._db.execute(
                "INSERT INTO jupyter_sessions VALUES (?, ?, ?, ?) ON CONFLICT(jupyter_session) "
                "DO UPDATE SET notebook_id=excluded.notebook_id, path=excluded.path, "
                "updated=excluded.updated",
                (jupyter_session, notebook_id, path, time.time()),
            )

    def jupyter_session_notebook(self, jupyter_session: str) -> tuple[str, str] | None:
        """(notebook id, path) a Jupyter session names, as the server extension noted it."""
        with self._lock:
            row = self._db.execute(
                "SELECT notebook_id, path FROM jupyter_sessions WHERE jupyter_session = ?",
                (jupyter_session,),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def notebook_binding(self, notebook_id: str) -> tuple[str, str] | None:
        """(session id, how it was bound) of a notebook, or None for a notebook not seen yet."""
        with self._lock:
            row = self._db.execute(
                "SELECT session_id, how FROM notebooks WHERE notebook_id = ?", (notebook_id,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def notebooks_of(self, session_id: str) -> list[str]:
        """The notebook ids bound to a session (normally at most one)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT notebook_id FROM notebooks WHERE session_id = ? ORDER BY updated",
                (session_id,),
            ).fetchall()
        return [r[0] for r in rows]

    def cells_of(self, session_id: str) -> set[str]:
        """The cell ids this session's turns ran in (empty ids left out)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT cell FROM events WHERE session_id = ? AND cell != ''",
                (session_id,),
            ).fetchall()
        return {r[0] for r in rows}

    def append(self, event: Event) -> Event:
        """Commit `event` under its session and return it with its sequence number. A store
        that cannot be written (locked by another process past the busy timeout, the disk
        full) raises `StoreUnavailableError`; the event is then not stored at all."""
        with self._writing():
            return self._append_new(event)[0]

    def append_many(self, events: Sequence[Event]) -> list[Event]:
        """Commit `events` (a group commit: one transaction) and return them with their
        sequence numbers, consecutive in the given order. All are stored or none is: a refused
        write raises `StoreUnavailableError` as `append` does. A stream of text deltas is
        stored this way, a batch at a time (see `omnikernel.session.turns`): one commit costs
        about what one insert does, so a batch of 100 costs a hundredth per event."""
        if not events:
            return []
        with self._writing():
            return self._append_batch(events)

    def start_turn(self, event: Event) -> Event:
        """Append a ``turn_start`` under the session's next turn number, chosen in the same
        transaction: two kernels on one session never get the same turn."""
        with self._writing():
            return self._append_new(event, new_turn=True)[0]

    def append_decision(self, event: Event) -> tuple[Event, bool]:
        """Append an ``approval_decision`` unless its request has one already (another kernel,
        or an answer given before this one): first answer wins, across processes. Returns the
        decision that stands and whether it is `event`."""
        with self._writing():
            return self._append_new(event, unless_decided=str(event.data.get("request_id", "")))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(self.path, exc) from exc

    def _append_new(
        self, event: Event, new_turn: bool = False, unless_decided: str = ""
    ) -> tuple[Event, bool]:
        # Redacted before anything is written (or compared: a request id as stored).
        data, unless_decided = self.redactor.data(event.data), self.redactor.text(unless_decided)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if unless_decided:
                    row = self._db.execute(
                        "SELECT * FROM events WHERE session_id = ? AND kind = ? AND "
                        "json_extract(data, '$.request_id') = ? ORDER BY seq LIMIT 1",
                        (event.session_id, EventKind.APPROVAL_DECISION.value, unless_decided),
                    ).fetchone()
                    if row is not None:
                        self._db.execute("COMMIT")
                        return _event_of(row), False
                stamped = event.stamped(seq=self._last_seq(event.session_id) + 1, data=data)
                if new_turn:
                    (turn,) = self._db.execute(
                        "SELECT COALESCE(MAX(turn), 0) FROM events WHERE session_id = ?",
                        (event.session_id,),
                    ).fetchone()
                    stamped = stamped.stamped(turn=turn + 1)
                self._insert([stamped])
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back itself on a full disk
                    self._db.execute("ROLLBACK")
                raise
        return stamped, True

    def _append_batch(self, events: Sequence[Event]) -> list[Event]:
        # Redacted before anything is written, as in `_append_new`.
        cleaned = [(event, self.redactor.data(event.data)) for event in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last: dict[str, int] = {}
                stamped = []
                for event, data in cleaned:
                    seq = last.get(event.session_id)
                    if seq is None:
                        seq = self._last_seq(event.session_id)
                    last[event.session_id] = seq + 1
                    stamped.append(event.stamped(seq=seq + 1, data=data))
                self._insert(stamped)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back itself on a full disk
                    self._db.execute("ROLLBACK")
                raise
        return stamped

    def _last_seq(self, session_id: str) -> int:
        """The session's last sequence number (inside the caller's write transaction). Only
        the sequence number: the largest turn is looked up for a new turn alone, since it
        takes a scan of the session's events (the primary key orders them by seq)."""
        (last,) = self._db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE session_id = ?", (session_id,)
        ).fetchone()
        return int(last)

    def _insert(self, stamped: Sequence[Event]) -> None:
        """Write stamped events and mark their sessions used (inside a write transaction)."""
        self._db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    e.session_id,
                    e.seq,
                    e.ts,
                    e.kind.value,
                    e.harness,
                    e.turn,
                    e.cell,
                    json.dumps(e.data, default=str),
                )
                for e in stamped
            ],
        )
        updated: dict[str, float] = {}
        for e in stamped:
            updated[e.session_id] = max(e.ts, updated.get(e.session_id, e.ts))
        self._db.executemany(
            "UPDATE sessions SET updated = ? WHERE session_id = ?",
            [(ts, session_id) for session_id, ts in updated.items()],
        )

    def events(
        self,
        session_id: str,
        since: int = 0,
        kinds: tuple[EventKind, ...] = (),
        turn: int | None = None,
        after_turn: int | None = None,
    ) -> Iterator[Event]:
        """Events of a session with seq > `since`, oldest first, optionally filtered (by kind,
        by turn, or to turns after `after_turn`)."""
        sql = "SELECT * FROM events WHERE session_id = ? AND seq > ?"
        args: list[Any] = [session_id, since]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += [k.value for k in kinds]
        if turn is not None:
            sql += " AND turn = ?"
            args.append(turn)
        if after_turn is not None:
            sql += " AND turn > ?"
            args.append(after_turn)
        sql += " ORDER BY seq"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        for row in rows:
            yield _event_of(row)

    def last_turn(self, session_id: str) -> int:
        with self._lock:
            (turn,) = self._db.execute(
                "SELECT COALESCE(MAX(turn), 0) FROM events WHERE session_id = ?", (session_id,)
            ).fetchone()
        return int(turn)

    def sessions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.session_id, s.notebook, s.created, s.updated, "
                "(SELECT COUNT(*) FROM events e WHERE e.session_id = s.session_id), s.origin "
                "FROM sessions s ORDER BY s.updated DESC"
            ).fetchall()
        keys = ("session_id", "notebook", "created", "updated", "events", "origin")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def summaries(self) -> list[dict[str, Any]]:
        """`sessions()` with what `omnikernel sessions` shows besides: the harnesses used, the
        turns, and the spend the gateway metered (USD; unpriced calls count 0)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.session_id, s.notebook, s.created, s.updated, s.origin, "
                "(SELECT GROUP_CONCAT(DISTINCT harness) FROM events e "
                " WHERE e.session_id = s.session_id AND harness != ''), "
                "(SELECT COUNT(*) FROM events e WHERE e.session_id = s.session_id "
                " AND kind = 'turn_start'), "
                "(SELECT COALESCE(SUM(json_extract(data, '$.cost_usd')), 0) FROM events e "
                " WHERE e.session_id = s.session_id AND kind = 'spend') "
                "FROM sessions s ORDER BY s.updated DESC"
            ).fetchall()
        keys = (
            "session_id",
            "notebook",
            "created",
            "updated",
            "origin",
            "harnesses",
            "turns",
            "spend_usd",
        )
        out = [dict(zip(keys, row, strict=True)) for row in rows]
        for row in out:
            row["harnesses"] = sorted(set((row["harnesses"] or "").split(",")) - {""})
        return out

    def delete_session(self, session_id: str) -> int:
        """Remove a session, its events and the notebooks bound to it, in one transaction.
        Returns the events removed."""
        with self._lock, self._writing():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed = self._db.execute(
                    "DELETE FROM events WHERE session_id = ?", (session_id,)
                ).rowcount
                self._db.execute("DELETE FROM notebooks WHERE session_id = ?", (session_id,))
                self._db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return removed


def _event_of(row: tuple[Any, ...]) -> Event:
    session, seq, ts, kind, harness, turn, cell, data = row
    return Event(
        kind=EventKind(kind),
        data=json.loads(data),
        seq=seq,
        session_id=session,
        harness=harness,
        turn=turn,
        cell=cell,
        ts=ts,
    )
