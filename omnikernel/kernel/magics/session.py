"""`%session`: which agent session this notebook continues, and changing it.

- ``%session``: the session id, its turns, the notebook it belongs to and how it was chosen.
- ``%session new``: a fresh session for this notebook (the old one stays in the store).
- ``%session fork [NAME]``: continue in a copy of this session; the original is untouched.
- ``%session NAME``: attach the session NAME (start one of that name if there is none).
- ``%session list``: every session in the store.
- ``%session import claude|codex|pi [ID|latest]``: a conversation started in a terminal with
  that CLI, read from its own session file, as a new session this notebook continues
  (`omnikernel.session.imports`).
- ``%fork [NAME]``: the same as ``%session fork [NAME]``.
- ``%export FORMAT [FILE]``: write this session out (md, html, jsonl, ipynb; `omnikernel.view.export`).

The rules that pick a kernel's session at start are in `omnikernel.session.identity`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.display import display

from omnikernel.kernel.magics.common import SessionMagicsBase, show, table
from omnikernel.session import identity

if TYPE_CHECKING:
    pass

USAGE = (
    "%session new starts a fresh session for this notebook; %session fork [NAME] continues in "
    "a copy of this one (left untouched); %session NAME attaches an existing session (or starts "
    "one with that name); %session list shows them all; %session import claude|codex|pi "
    "[ID|latest] continues a conversation started in a terminal."
)
RESERVED = {"new", "fork", "list", "import"}


def first_cell_notice(who: identity.Identity) -> str | None:
    """What the first prompt cell says about its session, when that is not obvious: a session
    named from outside, or one that lasts only this run."""
    if who.per_run:
        return (
            f"Session {who.session_id} is new for this run: nothing tells the kernel which "
            f"notebook it runs (no Jupyter server with the omnikernel extension). To continue it "
            f"in a later run, start the notebook with `%session {who.session_id}` or set "
            f"{identity.SESSION_ID_ENV}={who.session_id}."
        )
    if who.how == identity.NAMED_BY_ENV:
        return f"Session {who.session_id}, named by {identity.SESSION_ID_ENV}."
    return None


@magics_class
class SessionMagics(SessionMagicsBase):
    @line_magic("session")
    def session_magic(self, line: str) -> None:
        """%session [new | fork [NAME] | list | NAME | import CLI [ID]]: show or change this
        notebook's session."""
        words = line.split()
        if not words:
            return self._show()
        verb, rest = words[0], words[1:]
        if verb == "list" and not rest:
            return self._list()
        if verb == "new" and not rest:
            return self._new()
        if verb == "import":
            return self._import(rest)
        if verb == "fork" and len(rest) <= 1:
            return self._fork(rest[0] if rest else None)
        if len(words) == 1 and verb not in RESERVED:
            return self._attach(verb)
        raise UsageError(f"%session does not take {line.strip()!r}. {USAGE}")

    @line_magic("fork")
    def fork_magic(self, line: str) -> None:
        """%fork [NAME]: continue from here in a new session (the same as %session fork)."""
        words = line.split()
        if len(words) > 1:
            raise UsageError("Usage: %fork [NAME]: one session name at most.")
        self._fork(words[0] if words else None)

    @line_magic("export")
    def export_magic(self, line: str) -> None:
        """%export FORMAT [FILE]: write this session (prompts, text, tool calls, diffs,
        approvals, spend) to FILE, by default `<session>.<format>` in the working folder."""
        # Imported at the first export, not at the kernel's start (~5 ms).
        from omnikernel.view.export import (
            ExportError,
            check_format,
            default_export_name,
            export_session,
            write_whole,
        )

        words = line.split()
        if not 1 <= len(words) <= 2:
            raise UsageError("Usage: %export md|html|jsonl|ipynb [FILE]")
        s = self.session
        try:
            fmt = check_format(words[0])
        except ExportError as exc:
            raise UsageError(str(exc)) from None
        if s.store.session(s.session_id) is None:
            raise UsageError(
                f"Session {s.session_id} has no turns yet: there is nothing to export."
            )
        target = Path(words[1]).expanduser() if len(words) == 2 else None
        target = target or Path(default_export_name(s.session_id, fmt))
        if not target.is_absolute():
            target = s.cwd / target
        try:
            write_whole(target, export_session(s.store, s.session_id, fmt))
        except ExportError as exc:
            raise UsageError(str(exc)) from None
        show(f"Exported session {s.session_id} ({fmt}) to {target}.")

    # -- the verbs -----------------------------------------------------------------------------

    def _show(self) -> None:
        s = self.session
        row = s.store.session(s.session_id)
        turns = row["turns"] if row else 0
        notebook = s.notebook
        if row and s.notebook_id in s.store.notebooks_of(s.session_id):
            notebook = row["notebook"]  # kept current by the server through renames
        lines = [
            f"Session {s.session_id}: {turns} turn(s).",
            f"Notebook: {notebook}"
            + (f" (file id {s.notebook_id})" if s.notebook_id else " (not known to the kernel)"),
            f"Chosen: {s.how}.",
        ]
        if row and row["origin"]:
            lines.append(f"Forked from: {row['origin']}.")
        if s.notebook_id:
            lines.append("The notebook keeps this session through renames and moves.")
        else:
            lines.append(
                f"It lasts this run only: start a later run with `%session {s.session_id}` or "
                f"set {identity.SESSION_ID_ENV}={s.session_id} to continue it."
            )
        lines.append(USAGE)
        show("\n".join(lines), "  \n".join(lines))

    def _list(self) -> None:
        sessions = self.session.store.sessions()
        if not sessions:
            show("No sessions in the store yet: run a prompt cell first.")
            return
        rows = []
        for row in sessions:
            when = datetime.datetime.fromtimestamp(row["updated"]).strftime("%Y-%m-%d %H:%M")
            mark = "➤ " if row["session_id"] == self.session.session_id else ""
            rows.append(
                [
                    mark + row["session_id"],
                    row["notebook"],
                    row["events"],
                    when,
                    row["origin"] or "-",
                ]
            )
        display(table(["session", "notebook", "events", "updated", "forked from"], rows), raw=True)

    def _new(self) -> None:
        s = self.session
        old = s.session_id
        s.use_session(identity.new_session_id(s.notebook), "started with %session new")
        show(
            f"New session {s.session_id}: the agents start from nothing. The old session "
            f"{old} stays in the store (%session {old} attaches it again)." + self._lasts()
        )

    def _import(self, words: list[str]) -> None:
        # Imported at the first import, not at the kernel's start (~8 ms).
        from omnikernel.session.imports import (
            IMPORTABLE,
            SessionImportError,
            find_session,
            read_session,
        )
        from omnikernel.session.imports import store_session as store_imported

        if not words or words[0] not in IMPORTABLE or len(words) > 2:
            raise UsageError(
                f"%session import {'|'.join(IMPORTABLE)} [ID|latest]: which CLI's terminal "
                "session to continue (its id, or the latest one)."
            )
        harness, which = words[0], words[1] if len(words) > 1 else "latest"
        s = self.session
        try:
            path = find_session(harness, which, cwd=str(s.cwd))
            imported = read_session(harness, path)
        except SessionImportError as exc:
            raise UsageError(str(exc)) from None
        target = identity.new_session_id(s.notebook)
        stored = store_imported(s.store, imported, target, s.notebook)
        s.use_session(target, f"imported from {harness} session {imported.native_id}")
        s.switch(harness)
        native = s.adopt_imported(harness, imported.native_id, path)
        where = (
            f" (it ran in {imported.cwd})" if imported.cwd and imported.cwd != str(s.cwd) else ""
        )
        how = (
            f"which resumes its own session {imported.native_id}"
            if native
            else "which is handed the imported turns"
        )
        show(
            f"Imported {harness} session {imported.native_id} from {path}{where}: "
            f"{imported.summary}, {stored} events in the new session {target}. The next prompt "
            f"continues it with {harness}, {how}."
        )

    def _fork(self, name: str | None) -> None:
        s = self.session
        source = s.session_id
        target = self._name(name) if name else identity.new_session_id(s.notebook)
        if s.store.session(target) is not None:
            raise UsageError(f"There already is a session {target!r}: pick another name.")
        if s.store.session(source) is None:
            raise UsageError(f"Session {source} has no turns yet: there is nothing to fork.")
        copied = s.store.fork_session(source, target, s.notebook)
        s.use_session(target, f"forked from {source} with %session fork")
        show(
            f"Forked {source} into {target} ({copied} events copied): this notebook continues "
            f"in {target}; {source} is left as it was." + self._lasts()
        )

    def _attach(self, name: str) -> None:
        s = self.session
        name = self._name(name)
        if name == s.session_id:
            show(f"Already in session {name}.")
            return
        row = s.store.session(name)
        s.use_session(name, "attached with %session")
        if row is None:
            show(f"Started a new session named {name}." + self._lasts())
            return
        others = [n for n in s.store.notebooks_of(name) if n != s.notebook_id]
        shared = (
            f" Another notebook uses it too ({row['notebook']}): both now add turns to it; "
            f"`%session fork` continues in a copy instead."
            if others
            else ""
        )
        show(
            f"Attached session {name} ({row['turns']} turn(s)); the agents are handed its "
            f"history with the next prompt.{shared}" + self._lasts()
        )

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _name(name: str) -> str:
        try:
            return identity.check_session_name(name)
        except identity.SessionNameError as exc:
            raise UsageError(str(exc)) from None

    def _lasts(self) -> str:
        """Whether the change outlives this kernel."""
        if self.session.notebook_id:
            return " The notebook keeps it for its next kernels."
        return (
            f" Only this run knows it (no notebook identity): run `%session "
            f"{self.session.session_id}` again in a later run to continue it."
        )
