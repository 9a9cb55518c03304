"""`omnikernel attach [SESSION]`: follow a session from a terminal, as its notebook shows it.

It reads only the session store: first the session's stored events, then new ones as they are
committed (polling by sequence number; the store is SQLite in WAL mode, so reading never
blocks the kernel that writes). Every event is rendered by the same `CellView` the kernel
uses, with the agent's text as a stream, so the terminal shows what the cell shows, in full.

An approval waiting for a person shows how to answer it from here: `--approve REQUEST` or
`--deny REQUEST` writes the answer to the store, where the kernel that waits on it takes it
within a moment (the same path the share page's buttons use, `omnikernel.store.shares`); the
first answer wins, wherever it was given, and the cell's card says who answered and from where.
So anyone who can read the store (the same machine, the same user) can answer; from elsewhere,
use a co-drive link (`%share`).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from omnikernel.events import Event, EventKind
from omnikernel.kernel.settings import SessionFiles
from omnikernel.store.sessions import SessionStore
from omnikernel.view.render import CellView, terminal_safe

#: Seconds between two looks at the store while following.
POLL_S = 0.2


class SessionNotFoundError(LookupError):
    pass


def pick_session(store: SessionStore, wanted: str | None) -> str:
    """The session id `wanted` names (an id or a unique prefix); default: the latest used."""
    sessions = store.sessions()
    if not sessions:
        raise SessionNotFoundError(f"the store {store.path} has no sessions yet")
    if not wanted:
        return str(sessions[0]["session_id"])
    ids = [str(s["session_id"]) for s in sessions]
    if wanted in ids:
        return wanted
    matches = [i for i in ids if i.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(ids[:10])
    if matches:
        raise SessionNotFoundError(f"{wanted!r} names several sessions: {', '.join(matches)}")
    raise SessionNotFoundError(f"no session {wanted!r} in {store.path}; sessions: {known}")


class TerminalView:
    """Events to a terminal: a header per turn, then what the cell shows."""

    def __init__(self, out: TextIO):
        self.out = out
        self._view: CellView | None = None

    def _print_bundle(self, bundle: dict[str, str], **_: Any) -> None:
        self.out.write(terminal_safe(bundle.get("text/plain", "")) + "\n")

    def _write(self, text: str) -> None:
        self.out.write(text)

    def show(self, event: Event) -> None:
        if event.kind == EventKind.APPROVAL_REQUEST:
            rid = terminal_safe(str(event.data.get("request_id", "")))
            what = terminal_safe(str(event.data.get("summary", "")))
            self.out.write(
                f"? approval {rid}: {what}\n  answer: omnikernel attach "
                f"{event.session_id} --approve {rid}   (or --deny {rid})\n"
            )
        if event.kind == EventKind.TURN_START or self._view is None:
            self._view = CellView(self._print_bundle, lambda *a, **k: None, stream=self._write)
        if event.kind == EventKind.TURN_START:
            prompt = terminal_safe(str(event.data.get("prompt", "")))
            quoted = "\n".join("> " + line for line in prompt.splitlines()) or ">"
            by = terminal_safe(str(event.data.get("by", "")))
            origin = f" · from {by}" if by else ""
            if by and (runs_as := terminal_safe(str(event.data.get("runs_as", "")))):
                origin += f", run with {runs_as}'s credentials and budget"
            self.out.write(f"\n━━ turn {event.turn} · {event.harness}{origin} ━━\n{quoted}\n")
        else:
            self._view.show(event)
        self.out.flush()


def follow(
    store: SessionStore,
    session_id: str,
    out: TextIO,
    *,
    live: bool = True,
    poll_s: float = POLL_S,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Show the stored events of `session_id`, then (with `live`) new ones as they come."""
    view = TerminalView(out)
    seq = 0
    while True:
        for event in store.events(session_id, since=seq):
            view.show(event)
            seq = event.seq
        if not live or not keep_going():
            return
        time.sleep(poll_s)


class AnswerError(ValueError):
    """The approval cannot be answered (unknown, or decided already): the message says why."""


def answer(store: SessionStore, session_id: str, request_id: str, allow: bool) -> str:
    """Answer a waiting approval of `session_id` as this terminal's user; what was done."""
    from omnikernel.store.shares import ShareCodes  # the answers table the kernel watches

    asked = decided = None
    for event in store.events(
        session_id, kinds=(EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION)
    ):
        if str(event.data.get("request_id", "")) != request_id:
            continue
        if event.kind == EventKind.APPROVAL_REQUEST:
            asked = event
        else:
            decided = event
    if asked is None:
        raise AnswerError(f"session {session_id} has no approval request {request_id!r}")
    if decided is not None:
        by = decided.data.get("by", "?")
        raise AnswerError(
            f"approval {request_id} was decided already "
            f"({decided.data.get('decision')} by {by}): the first answer wins"
        )
    codes = ShareCodes(store.path)
    if (given := codes.given_answer(session_id, request_id)) is not None:
        verb = "approved" if given[0] else "denied"
        raise AnswerError(
            f"approval {request_id} was {verb} already by {given[1]} "
            f"({given[2]}); the kernel takes that answer when it runs: the first "
            "answer wins"
        )
    # The answer names its source: "approved by NAME (terminal)"; under JupyterHub the hub
    # user whose server's terminal this is (every user may run as the same Unix user there).
    who = os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    codes.post_answer(session_id, request_id, allow, who, "terminal")
    verb = "approved" if allow else "denied"
    return f"{verb} {request_id} ({asked.data.get('summary', '')}) as {who}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnikernel attach",
        description="Follow an agent session from a terminal: its stored events, then live.",
    )
    parser.add_argument(
        "session", nargs="?", help="session id or a unique prefix (default: the latest used)"
    )
    parser.add_argument(
        "--store", help="session store file (default: $OMNIKERNEL_STORE, else Jupyter's data dir)"
    )
    parser.add_argument("--no-follow", action="store_true", help="show the stored events and exit")
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument(
        "--approve", metavar="REQUEST", help="approve a waiting approval, then exit"
    )
    decide.add_argument("--deny", metavar="REQUEST", help="deny a waiting approval, then exit")
    args = parser.parse_args(argv)
    path = args.store or SessionFiles().store
    if args.store is None and not Path(path).exists():
        print(f"omnikernel attach: no session store at {path}; run a prompt first", file=sys.stderr)
        return 2
    store = SessionStore(path)
    try:
        session_id = pick_session(store, args.session)
    except SessionNotFoundError as exc:
        print(f"omnikernel attach: {exc}", file=sys.stderr)
        return 2
    if args.approve or args.deny:
        try:
            print(answer(store, session_id, args.approve or args.deny, bool(args.approve)))
        except AnswerError as exc:
            print(f"omnikernel attach: {exc}", file=sys.stderr)
            return 2
        finally:
            store.close()
        return 0
    print(f"Following session {session_id} (Ctrl-C to stop).", flush=True)
    try:
        follow(store, session_id, sys.stdout, live=not args.no_follow)
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
