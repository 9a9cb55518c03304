"""Share codes, grants, answers and watchers: the share server and the kernels agree through
the session store's SQLite file.

A kernel (the ``%share`` magic) and the share server (in the jupyter server, or standalone) are
different processes, so everything they must agree on lives in tables next to the events:

- ``share_codes``: one row per link, and one per named person or group a session is shared
  with under JupyterHub (``person`` is ``bob`` or ``group:data-team``; such a row has no code
  anyone holds: the visitor's hub sign-in is checked against it instead). Only a SHA-256 of the code and its first 4 characters are
  stored (a code is 256 random bits: no key stretching needed); lookups compare the hash in
  constant time. Every code expires; revoking one is a flag the server checks on every request
  and every tick of every open socket.
- ``share_grants``: what a code is exchanged for on first open (the cookie's value, again only
  hashed), tied to its code, so revoking a code ends its grants at once.
- ``share_answers``: approval answers given on the page; the kernel waiting on that approval
  takes them (first answer wins in the kernel, `omnikernel.approvals.pending`).
- ``share_prompts``: co-drivers' prompts; the kernel showing the session's feed takes them one
  at a time (`omnikernel.kernel.codrive`).
- ``share_feeds``: which kernels show a session's feed now (so the page can say whether a
  prompt will run).
- ``share_watchers``: who has the live page open, for ``%share``.
- ``share_servers``: where share servers listen, so ``%share`` prints links that work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omnikernel.store.connect import add_missing_column, connect
from omnikernel.store.sessions import default_store_path

READ_ONLY = "ro"
CO_DRIVE = "rw"
ROLES = (READ_ONLY, CO_DRIVE)
ROLE_NAMES = {READ_ONLY: "read-only", CO_DRIVE: "co-drive"}
#: The longest prompt a co-driver may send (characters).
MAX_PROMPT_CHARS = 20_000
#: A prompt no kernel took within this long is dropped, not run hours later by surprise.
PROMPT_TTL_S = 600.0
#: A link lasts a day unless said otherwise; a cookie never outlives its code.
DEFAULT_TTL_S = 24 * 3600.0
PREFIX_LEN = 4
#: A grant to a named person lasts until revoked (like a JupyterHub share); ten years stands
#: for that in the `expires` column.
PERSON_TTL_S = 10 * 365 * 24 * 3600.0
GROUP_PREFIX = "group:"
#: The code id of the server owner's own view of a session on the share page under JupyterHub:
#: never in the store, never revoked (`revoked_among` skips it).
OWNER_CODE_ID = "owner"
_CODE_COLUMNS = "code_id, session_id, role, expires, revoked, person"

SCHEMA = """
CREATE TABLE IF NOT EXISTS share_codes (
    code_id    TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    role       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    hashed     TEXT NOT NULL,
    created    REAL NOT NULL,
    expires    REAL NOT NULL,
    revoked    REAL,
    person     TEXT
);
CREATE INDEX IF NOT EXISTS share_codes_prefix ON share_codes(prefix);
CREATE TABLE IF NOT EXISTS share_grants (
    hashed  TEXT PRIMARY KEY,
    code_id TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS share_answers (
    answer_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    allow      INTEGER NOT NULL,
    who        TEXT NOT NULL,
    source     TEXT NOT NULL,
    ts         REAL NOT NULL,
    taken      REAL
);
CREATE TABLE IF NOT EXISTS share_prompts (
    prompt_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    text       TEXT NOT NULL,
    who        TEXT NOT NULL,
    source     TEXT NOT NULL,
    ts         REAL NOT NULL,
    taken      REAL
);
CREATE TABLE IF NOT EXISTS share_feeds (
    session_id TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    since      REAL NOT NULL,
    PRIMARY KEY (session_id, pid)
);
CREATE TABLE IF NOT EXISTS share_watchers (
    watcher_id TEXT PRIMARY KEY,
    server_pid INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    role       TEXT NOT NULL,
    who        TEXT NOT NULL,
    since      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS share_servers (
    url     TEXT PRIMARY KEY,
    pid     INTEGER NOT NULL,
    started REAL NOT NULL
);
"""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Code:
    """A link's row: never the code itself."""

    code_id: str
    session_id: str
    role: str
    expires: float
    revoked: float | None
    #: The hub user (``bob``) or group (``group:data-team``) this grant names; None for a link.
    person: str | None = None

    def usable(self, now: float | None = None) -> bool:
        return self.revoked is None and (now or time.time()) < self.expires


@dataclasses.dataclass(frozen=True)
class SharedPrompt:
    """A co-driver's prompt as the kernel takes it."""

    prompt_id: int
    text: str
    who: str
    source: str


class ShareCodes:
    """The share tables of one store file (thread-safe; one connection per object)."""

    def __init__(self, path: Path | str | None = None, clock: Any = time.time):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._db = connect(self.path)
        self._lock = threading.Lock()
        self._db.executescript(SCHEMA)
        # A store made before sharing by name.
        add_missing_column(self._db, "share_codes", "person", "TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- codes --------------------------------------------------------------------------------

    def new_code(self, session_id: str, role: str, ttl_s: float = DEFAULT_TTL_S) -> str:
        """A fresh code for `session_id` in `role`; the only time the plaintext exists."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        code = secrets.token_urlsafe(32)
        now = self.clock()
        self._q(
            "INSERT INTO share_codes VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            (
                "sc_" + secrets.token_hex(8),
                session_id,
                role,
                code[:PREFIX_LEN],
                _hash(code),
                now,
                now + ttl_s,
            ),
        )
        return code

    def lookup(self, code: str) -> Code | None:
        """The usable link `code` opens, or None (unknown, revoked or expired alike)."""
        if not code or len(code) > 200:
            return None
        digest = _hash(code)
        rows = self._q(
            "SELECT code_id, session_id, role, expires, revoked, hashed FROM "
            "share_codes WHERE prefix = ? AND person IS NULL",
            (code[:PREFIX_LEN],),
        )
        for code_id, session_id, role, expires, revoked, hashed in rows:
            if hmac.compare_digest(hashed, digest):
                found = Code(code_id, session_id, role, expires, revoked)
                return found if found.usable(self.clock()) else None
        return None

    def code(self, code_id: str) -> Code | None:
        rows = self._q(f"SELECT {_CODE_COLUMNS} FROM share_codes WHERE code_id = ?", (code_id,))
        return Code(*rows[0]) if rows else None

    def active(self, session_id: str) -> list[Code]:
        """The session's usable links and grants to people, oldest first."""
        now = self.clock()
        rows = self._q(
            f"SELECT {_CODE_COLUMNS} FROM share_codes "
            "WHERE session_id = ? AND revoked IS NULL AND expires > ? ORDER BY created",
            (session_id, now),
        )
        return [Code(*r) for r in rows]

    def revoke(self, session_id: str, roles: tuple[str, ...] = ROLES) -> int:
        """End the session's links of `roles` now (their cookies and sockets with them).
        Grants to named people stay: `revoke_person` ends those."""
        marks = ",".join("?" * len(roles))
        with self._lock:
            cursor = self._db.execute(
                f"UPDATE share_codes SET revoked = ? WHERE session_id = ? AND revoked IS NULL "
                f"AND person IS NULL AND role IN ({marks})",
                (self.clock(), session_id, *roles),
            )
            return cursor.rowcount

    # -- grants to named hub users and groups ----------------------------------------------------

    def share_with(self, session_id: str, person: str, role: str) -> Code:
        """Let hub user `person` (or ``group:NAME``'s members) into the session in `role`,
        replacing what they had; lasts until `revoke_person`."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        check_person(person)
        now = self.clock()
        code_id = "sp_" + secrets.token_hex(8)
        unheld = secrets.token_urlsafe(32)  # nobody holds it: `lookup` never finds this row
        with self._lock:
            self._db.execute(
                "UPDATE share_codes SET revoked = ? WHERE session_id = ? AND person = ? "
                "AND revoked IS NULL",
                (now, session_id, person),
            )
            self._db.execute(
                "INSERT INTO share_codes VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (code_id, session_id, role, "", _hash(unheld), now, now + PERSON_TTL_S, person),
            )
        return Code(code_id, session_id, role, now + PERSON_TTL_S, None, person)

    def revoke_person(self, session_id: str, person: str) -> int:
        """End `person`'s (``bob``, ``group:data-team``) access to the session now: their open
        pages close on the share page's next tick."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE share_codes SET revoked = ? WHERE session_id = ? AND person = ? "
                "AND revoked IS NULL",
                (self.clock(), session_id, person),
            )
            return cursor.rowcount

    def people(self, session_id: str) -> list[Code]:
        """The session's usable grants to named people and groups."""
        return [c for c in self.active(session_id) if c.person is not None]

    def shared_anywhere(self, person: str) -> bool:
        """Whether `person` still has a usable grant to any session of this store."""
        rows = self._q(
            "SELECT COUNT(*) FROM share_codes WHERE person = ? AND revoked IS NULL AND expires > ?",
            (person, self.clock()),
        )
        return bool(rows[0][0])

    def granted_to(self, session_id: str, name: str, groups: list[str]) -> Code | None:
        """The grant that lets hub user `name` (member of `groups`) into the session, or None;
        co-drive before read-only when several apply."""
        wanted = {name, *(GROUP_PREFIX + g for g in groups)}
        found = [c for c in self.people(session_id) if c.person in wanted]
        found.sort(key=lambda c: (c.role != CO_DRIVE, c.person != name))
        return found[0] if found else None

    # -- grants (the cookie a code is exchanged for) -------------------------------------------

    def grant(self, code: Code) -> str:
        token = secrets.token_urlsafe(32)
        self._q(
            "INSERT INTO share_grants VALUES (?, ?, ?)", (_hash(token), code.code_id, self.clock())
        )
        return token

    def granted(self, token: str | None) -> Code | None:
        """The usable link a cookie was granted by, or None (revoked and expired alike)."""
        if not token or len(token) > 200:
            return None
        rows = self._q("SELECT code_id FROM share_grants WHERE hashed = ?", (_hash(token),))
        if not rows:
            return None
        found = self.code(rows[0][0])
        return found if found is not None and found.usable(self.clock()) else None

    def revoked_among(self, code_ids: set[str]) -> set[str]:
        """Which of `code_ids` can no longer be used (open sockets check this on each tick)."""
        code_ids = {c for c in code_ids if c.startswith(("sc_", "sp_"))}  # not the owner's own
        if not code_ids:
            return set()
        now = self.clock()
        marks = ",".join("?" * len(code_ids))
        rows = self._q(
            f"SELECT code_id FROM share_codes WHERE code_id IN ({marks}) AND "
            f"(revoked IS NULL AND expires > ?)",
            (*code_ids, now),
        )
        return code_ids - {r[0] for r in rows}

    # -- answers --------------------------------------------------------------------------------

    def post_answer(
        self, session_id: str, request_id: str, allow: bool, who: str, source: str
    ) -> None:
        self._q(
            "INSERT INTO share_answers (session_id, request_id, allow, who, source, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, request_id, int(allow), who, source, self.clock()),
        )

    def given_answer(self, session_id: str, request_id: str) -> tuple[bool, str, str] | None:
        """An answer to `request_id` given already and not yet taken by a kernel (the kernel
        is busy, or none runs the session now): (allow, who, source). A second answer is
        refused while the first is on its way: the first answer wins."""
        rows = self._q(
            "SELECT allow, who, source FROM share_answers WHERE session_id = ? AND "
            "request_id = ? AND taken IS NULL ORDER BY answer_id LIMIT 1",
            (session_id, request_id),
        )
        return (bool(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    def take_answer(self, session_id: str, request_id: str) -> tuple[bool, str, str] | None:
        """The first untaken answer to `request_id`, marked taken: (allow, who, source)."""
        with self._lock:
            row = self._db.execute(
                "SELECT answer_id, allow, who, source FROM share_answers WHERE session_id = ? "
                "AND request_id = ? AND taken IS NULL ORDER BY answer_id LIMIT 1",
                (session_id, request_id),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE share_answers SET taken = ? WHERE answer_id = ?", (self.clock(), row[0])
            )
        return bool(row[1]), row[2], row[3]

    # -- co-drivers' prompts and the kernels that take them ------------------------------------

    def post_prompt(self, session_id: str, text: str, who: str, source: str) -> int:
        """Queue a co-driver's prompt; its id (the page shows its place in the queue)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO share_prompts (session_id, text, who, source, ts) "
                "VALUES (?, ?, ?, ?, ?)",
                (session_id, text, who, source, self.clock()),
            )
            return int(cursor.lastrowid or 0)

    def queued_prompts(self, session_id: str) -> int:
        rows = self._q(
            "SELECT COUNT(*) FROM share_prompts WHERE session_id = ? AND taken IS NULL AND ts > ?",
            (session_id, self.clock() - PROMPT_TTL_S),
        )
        return int(rows[0][0])

    def take_prompt(self, session_id: str) -> SharedPrompt | None:
        """The oldest prompt no kernel took yet (and not too old to run), marked taken."""
        with self._lock:
            row = self._db.execute(
                "SELECT prompt_id, text, who, source FROM share_prompts WHERE session_id = ? "
                "AND taken IS NULL AND ts > ? ORDER BY prompt_id LIMIT 1",
                (session_id, self.clock() - PROMPT_TTL_S),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE share_prompts SET taken = ? WHERE prompt_id = ?", (self.clock(), row[0])
            )
        return SharedPrompt(*row)

    def feed_opened(self, session_id: str) -> None:
        """This process shows `session_id`'s feed and takes its prompts."""
        self._q(
            "INSERT OR REPLACE INTO share_feeds VALUES (?, ?, ?)",
            (session_id, os.getpid(), self.clock()),
        )

    def feed_closed(self, session_id: str | None = None) -> None:
        """This process stops taking prompts (for `session_id`, or for every session)."""
        if session_id is None:
            self._q("DELETE FROM share_feeds WHERE pid = ?", (os.getpid(),))
        else:
            self._q(
                "DELETE FROM share_feeds WHERE session_id = ? AND pid = ?",
                (session_id, os.getpid()),
            )

    def feed_open(self, session_id: str) -> bool:
        """Whether a live kernel takes `session_id`'s prompts now."""
        rows = self._q("SELECT pid FROM share_feeds WHERE session_id = ?", (session_id,))
        return any(_alive(pid) for (pid,) in rows)

    # -- housekeeping ---------------------------------------------------------------------------

    def purge(self, keep_s: float = DEFAULT_TTL_S) -> int:
        """Delete what can never be used again: links expired or revoked more than `keep_s`
        ago (with their grants), answers and prompts taken or too old to take. Returns how
        many rows went. The share server runs it at start and every hour."""
        old = self.clock() - keep_s
        with self._lock:
            gone = 0
            for sql, args in (
                (
                    "DELETE FROM share_grants WHERE code_id IN (SELECT code_id FROM share_codes "
                    "WHERE expires < ? OR revoked < ?)",
                    (old, old),
                ),
                ("DELETE FROM share_codes WHERE expires < ? OR revoked < ?", (old, old)),
                ("DELETE FROM share_answers WHERE ts < ?", (old,)),
                ("DELETE FROM share_prompts WHERE ts < ?", (old,)),
            ):
                gone += self._db.execute(sql, args).rowcount
        return gone

    # -- watchers and servers ------------------------------------------------------------------

    def watching(self, watcher_id: str, session_id: str, role: str, who: str) -> None:
        self._q(
            "INSERT OR REPLACE INTO share_watchers VALUES (?, ?, ?, ?, ?, ?)",
            (watcher_id, os.getpid(), session_id, role, who, self.clock()),
        )

    def left(self, watcher_id: str) -> None:
        self._q("DELETE FROM share_watchers WHERE watcher_id = ?", (watcher_id,))

    def watchers_changed(
        self, joined: Iterable[tuple[str, str, str, str]], left: Iterable[str]
    ) -> None:
        """The live pages opened (watcher_id, session_id, role, who) and closed since the last
        call, in one transaction: a thousand viewers arriving or leaving at once (a network
        drop) is one commit, not a thousand, each of which held the share server's loop."""
        now, pid = self.clock(), os.getpid()
        rows = [(watcher, pid, session, role, who, now) for watcher, session, role, who in joined]
        gone = [(watcher,) for watcher in left]
        if not rows and not gone:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO share_watchers VALUES (?, ?, ?, ?, ?, ?)", rows
                )
                self._db.executemany("DELETE FROM share_watchers WHERE watcher_id = ?", gone)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def watchers(self, session_id: str) -> list[dict[str, Any]]:
        rows = self._q(
            "SELECT server_pid, role, who, since FROM share_watchers "
            "WHERE session_id = ? ORDER BY since",
            (session_id,),
        )
        return [{"role": r, "who": w, "since": s} for pid, r, w, s in rows if _alive(pid)]

    def server_started(self, url: str) -> None:
        self._q(
            "INSERT OR REPLACE INTO share_servers VALUES (?, ?, ?)",
            (url, os.getpid(), self.clock()),
        )

    def server_stopped(self, url: str) -> None:
        self._q("DELETE FROM share_servers WHERE url = ? AND pid = ?", (url, os.getpid()))
        self._q("DELETE FROM share_watchers WHERE server_pid = ?", (os.getpid(),))

    def server_url(self) -> str | None:
        """The newest share server still running, or None."""
        rows = self._q("SELECT url, pid FROM share_servers ORDER BY started DESC")
        return next((url for url, pid in rows if _alive(pid)), None)


def check_person(person: str) -> str:
    """A hub user or ``group:`` name as JupyterHub allows them; ValueError says what is wrong."""
    name = person.removeprefix(GROUP_PREFIX)
    if not name or len(name) > 255 or any(ch in name for ch in "/?#&%\\ \t\n\r\"'<>"):
        raise ValueError(
            f"{person!r} is not a hub user or group name (write `bob` or `group:data-team`)"
        )
    return person


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
