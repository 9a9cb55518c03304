"""Running the shipped notebooks headless and offline: the tests and the docs build use this.

A notebook runs from a copy of its folder (so the files its agents write land in the copy) with
the Omnigent kernel, a private store and state dir, and no model credentials, so the offline
rehearsal model answers at $0 and nothing reaches the network. Nobody clicks a card in a
headless run, so a person answers from a terminal instead, the way
`omnikernel attach --approve ID` does (`Approver`): the card is real, shown in the cell, and the
kernel takes the answer from the store.

nbclient and nbformat come with the `test` and `docs` extras, not with the kernel, so they are
imported where they are used.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnikernel.cli.attach import AnswerError, answer
from omnikernel.events import EventKind
from omnikernel.store.sessions import SessionStore

if TYPE_CHECKING:
    import nbformat

#: Model credentials an offline run must not inherit from the machine.
UPSTREAM_VARS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")


class Approver(threading.Thread):
    """Answers each approval the notebook's session asks, from the store, like a person at a
    terminal: `allow(request)` says how (default: approve)."""

    def __init__(self, store: Path, allow: Callable[[dict[str, Any]], bool] = lambda _r: True):
        super().__init__(daemon=True)
        self.store_path, self.allow = store, allow
        self.answered: list[dict[str, Any]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            if not self.store_path.exists():
                continue
            store = SessionStore(self.store_path)
            for session in store.sessions():
                sid = str(session["session_id"])
                events = list(
                    store.events(
                        sid, kinds=(EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION)
                    )
                )
                decided = {
                    e.data.get("request_id")
                    for e in events
                    if e.kind == EventKind.APPROVAL_DECISION
                }
                for event in events:
                    rid = event.data.get("request_id")
                    if event.kind != EventKind.APPROVAL_REQUEST or rid in decided:
                        continue
                    if any(a["request_id"] == rid for a in self.answered):
                        continue
                    try:
                        answer(store, sid, str(rid), self.allow(event.data))
                    except AnswerError:
                        continue
                    self.answered.append(event.data)

    def __enter__(self) -> Approver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(timeout=5)


def offline_env(tmp: Path, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A kernel environment for an offline run: private store and state under `tmp`, no
    inherited credentials or plan logins, no auto-approval."""
    env = {
        k: v for k, v in (os.environ if base is None else base).items() if k not in UPSTREAM_VARS
    }
    for var in (
        "OMNIKERNEL_AUTO_APPROVE",
        "JPY_SESSION_NAME",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "OMNIKERNEL_CREDENTIALS",
    ):
        env.pop(var, None)
    env["OMNIKERNEL_STORE"] = str(tmp / "store" / "sessions.sqlite3")
    env["OMNIKERNEL_STATE_DIR"] = str(tmp / "state")
    env["CLAUDE_CONFIG_DIR"] = str(tmp / "host-claude")
    env["CODEX_HOME"] = str(tmp / "host-codex")
    env.update(extra)
    return env


def run_notebook(
    notebooks: Path,
    name: str,
    tmp: Path,
    env: dict[str, str] | None = None,
    approver: Approver | None = None,
    timeout: int = 240,
) -> tuple[Path, nbformat.NotebookNode]:
    """Execute `name` from a copy of the `notebooks` folder in `tmp/nb`, raising nbclient's
    `CellExecutionError` on a cell error; `approver` answers its cards. Returns the copy's
    folder and the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    work = tmp / "nb"
    shutil.copytree(notebooks, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    nb = nbformat.read(work / name, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="omnikernel", resources={"metadata": {"path": str(work)}}
    )
    # As Jupyter's front ends do: the kernel learns its notebook, so the rehearsal script
    # beside it (`<notebook>.rehearsal.json`) plays.
    env = dict(offline_env(tmp) if env is None else env, JPY_SESSION_NAME=str(work / name))
    if approver is None:
        client.execute(env=env)
    else:
        with approver:
            client.execute(env=env)
    return work, nb
