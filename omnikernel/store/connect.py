"""Opening the store file that several processes share, and bringing an older one up to date.

Kernels, the jupyter-server extension, the share server and `omnikernel attach` open one SQLite
file, often at the same moment (a notebook's kernel and the page that follows it). Two things
go wrong then unless opening is done with care:

- switching a new file to WAL needs a lock SQLite may refuse at once, without waiting out the
  busy timeout ("database is locked"): the switch is retried for a few seconds;
- two openers that both see a column of a newer version missing both add it, and the second
  dies ("duplicate column name"): the check and the addition are one immediate transaction,
  so whoever comes second waits for the first and then finds the column there.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

#: How long an opener waits for another process's lock (the busy timeout), in seconds.
BUSY_TIMEOUT_S = 5.0


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from the kernel's
    threads (the caller serialises writes), the file in WAL mode so readers never block."""
    db = sqlite3.connect(
        path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
    )
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)


def add_missing_column(db: sqlite3.Connection, table: str, column: str, declaration: str) -> None:
    """Add `column` (`declaration`: its type and default) to `table` unless it has it."""
    if column in _columns(db, table):
        return  # the usual case: no lock taken
    db.execute("BEGIN IMMEDIATE")
    try:
        if column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
