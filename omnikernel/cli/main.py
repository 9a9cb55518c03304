"""`omnikernel`: the sessions of the store, from the shell.

    omnikernel sessions                       id, notebook, harnesses, turns, spend, last activity
    omnikernel export SESSION --format md|html|jsonl|ipynb [-o FILE]
    omnikernel prune [--older-than DAYS] [--dry-run] [SESSION ...]
    omnikernel import claude|codex|pi [ID|latest] [--cwd DIR] [--session NAME]

Each subcommand is one entry of `SUBCOMMANDS` (a function adding its parser, a function running
it), so another module adds its own with `register` without touching these. Bad input is a
one-line error saying what to do, exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from omnikernel.store.sessions import SessionStore, StoreUnavailableError
from omnikernel.view.export import (
    FORMATS,
    ExportError,
    export_session,
    write_whole,
)

Runner = Callable[[argparse.Namespace], int]
#: name -> (adds its arguments to a subparser, runs it). Filled below and by `register`.
SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Runner]] = {}


class CliError(Exception):
    """Bad input or an impossible request: printed as one line, exit status 2."""


def register(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None], run: Runner
) -> None:
    """Add subcommand `name` (e.g. `omnikernel attach` from `omnikernel.cli.attach`)."""
    SUBCOMMANDS[name] = (help, add_arguments, run)


def open_store(args: argparse.Namespace) -> SessionStore:
    from omnikernel.kernel.settings import SessionFiles

    path = Path(args.store) if args.store else None
    if path is not None and not path.exists():
        raise CliError(f"There is no session store at {path}: check --store (or OMNIKERNEL_STORE).")
    return SessionStore(path or SessionFiles().store)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


# -- omnikernel sessions ---------------------------------------------------------------------


def _sessions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object a line")


def run_sessions(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = store.summaries()
    if args.json:
        import json

        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print(f"No sessions in {store.path} yet.")
        return 0
    table = [["SESSION", "NOTEBOOK", "HARNESSES", "TURNS", "SPEND", "LAST ACTIVITY"]]
    for r in rows:
        table.append(
            [
                r["session_id"],
                r["notebook"] or "-",
                ",".join(r["harnesses"]) or "-",
                str(r["turns"]),
                f"${r['spend_usd']:.4f}",
                _when(r["updated"]),
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


# -- omnikernel export -----------------------------------------------------------------------


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="the session id (see `omnikernel sessions`)")
    p.add_argument("--format", "-f", default="md", help=f"one of {', '.join(FORMATS)} (default md)")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")


def run_export(args: argparse.Namespace) -> int:
    text = export_session(open_store(args), args.session, args.format)
    if args.output:
        write_whole(Path(args.output), text)
        print(f"Exported {args.session} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


# -- omnikernel prune ------------------------------------------------------------------------


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("sessions", nargs="*", help="these sessions (default: all older than DAYS)")
    p.add_argument(
        "--older-than",
        type=float,
        default=30.0,
        metavar="DAYS",
        help="prune sessions with no activity for DAYS days (default 30)",
    )
    p.add_argument("--dry-run", "-n", action="store_true", help="only list what would go")
    p.add_argument(
        "--state-dir",
        help="the harnesses' state folder (default: $OMNIKERNEL_STATE_DIR, else beside the store)",
    )


def run_prune(args: argparse.Namespace) -> int:
    from omnikernel.kernel.settings import SessionFiles
    from omnikernel.store.turnlock import TurnLock, lock_path

    if args.older_than < 0:
        raise CliError("--older-than takes a number of days >= 0.")
    store = open_store(args)
    state = Path(args.state_dir or SessionFiles(store=str(store.path)).state_dir)
    known = {r["session_id"]: r for r in store.sessions()}
    if args.sessions:
        if missing := [s for s in args.sessions if s not in known]:
            raise CliError(
                f"No such session: {', '.join(missing)} (`omnikernel sessions` lists them)."
            )
        chosen = list(args.sessions)
    else:
        cutoff = time.time() - args.older_than * 86400
        chosen = [s for s, r in known.items() if r["updated"] < cutoff]
    if not chosen:
        print("Nothing to prune.")
        return 0
    for session_id in chosen:
        harness_state = state / session_id
        if args.dry_run:
            print(
                f"would remove {session_id} (last activity {_when(known[session_id]['updated'])})"
            )
            continue
        # A session a kernel is running a turn of now stays (its turn lock is held).
        lock = TurnLock(lock_path(store.path, session_id))
        if not lock.try_acquire():
            print(
                f"kept {session_id}: a kernel is running a turn of it now "
                f"({lock.holder() or 'another process'})"
            )
            continue
        try:
            events = store.delete_session(session_id)
            if harness_state.is_dir():
                shutil.rmtree(harness_state)
            lock.path.unlink(missing_ok=True)
        finally:
            lock.release()
        print(f"removed {session_id}: {events} events and its harness state")
    return 0


register("sessions", "list the stored sessions", _sessions_args, run_sessions)
register(
    "export",
    "write a session out as Markdown, HTML, JSON Lines or a notebook",
    _export_args,
    run_export,
)
register("prune", "remove old sessions and their harness state", _prune_args, run_prune)


# -- omnikernel import -------------------------------------------------------------------------


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("harness", help="the CLI whose terminal session to bring in: claude, codex, pi")
    p.add_argument(
        "which", nargs="?", default="latest", help="its session id (or a prefix), or latest"
    )
    p.add_argument(
        "--cwd", default="", help="prefer the latest session started in DIR (default: here)"
    )
    p.add_argument("--session", default="", help="the new session's name (default: a fresh id)")


def run_import(args: argparse.Namespace) -> int:
    """Store a terminal session as a new notebook session; `%session NAME` continues it."""
    from omnikernel.session import identity
    from omnikernel.session.imports import (
        SessionImportError,
        find_session,
        read_session,
        store_session,
    )

    store = open_store(args)
    try:
        path = find_session(args.harness, args.which, cwd=args.cwd or str(Path.cwd()))
        imported = read_session(args.harness, path)
    except SessionImportError as exc:
        raise CliError(str(exc)) from None
    target = args.session or identity.new_session_id(f"{args.harness}-import.ipynb")
    if store.session(target) is not None:
        raise CliError(f"There already is a session {target!r}: pick another --session name.")
    stored = store_session(store, imported, target, "")
    print(
        f"Imported {args.harness} session {imported.native_id} from {path}: {imported.summary}, "
        f"{stored} events in session {target}.\nContinue it in a notebook with "
        f"`%session {target}` then `%agent {args.harness}`, or follow it with "
        f"`omnikernel attach {target}`."
    )
    return 0


register(
    "import",
    "bring in a session started in a terminal with claude, codex or pi",
    _import_args,
    run_import,
)


def _own_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("arguments", nargs=argparse.REMAINDER, help="see `omnikernel COMMAND --help`")


def run_attach(argv: list[str]) -> int:
    from omnikernel.cli.attach import main as attach

    return attach(argv)


#: Commands that parse their own arguments (their modules also run with `python -m`).
OWN_PARSERS: dict[str, Callable[[list[str]], int | None]] = {"attach": run_attach}
register(
    "attach",
    "follow a session from a terminal: its stored events, then live",
    _own_arguments,
    lambda args: run_attach(args.arguments),
)

#: Commands other packages add (``omnikernel share-server`` comes from `jupyter_ext`, which
#: sits above this package: it plugs in here rather than being imported).
COMMANDS_GROUP = "omnikernel.commands"


def plugin_commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in SUBCOMMANDS}


def _plugin_help(entry: EntryPoint) -> str:
    doc = getattr(entry.load(), "__doc__", None) or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else entry.name


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="omnikernel", description="The Omnigent kernel's sessions.")
    top.add_argument(
        "--store", help="the session store (default: $OMNIKERNEL_STORE, else Jupyter's data dir)"
    )
    subs = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help, add_arguments, _) in SUBCOMMANDS.items():
        add_arguments(subs.add_parser(name, help=help, description=help))
    for name, entry in plugin_commands().items():
        help = _plugin_help(entry)
        _own_arguments(subs.add_parser(name, help=help, description=help))
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in OWN_PARSERS:
        return OWN_PARSERS[argv[0]](argv[1:]) or 0
    if argv and (plugin := plugin_commands().get(argv[0])) is not None:
        return plugin.load()(argv[1:]) or 0
    args = parser().parse_args(argv)
    if not args.command:
        parser().print_help()
        return 2
    try:
        return SUBCOMMANDS[args.command][2](args)
    except (CliError, ExportError, StoreUnavailableError) as exc:
        print(f"omnikernel {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `omnikernel export ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
