"""Which session a kernel continues (`omnikernel.session.identity`), against a real session store: the
rules as a table, forks, and the migration of path-derived sessions from older stores."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.session.identity import (
    MIGRATED,
    NAMED_BY_ENV,
    NEW,
    SessionNameError,
    check_session_name,
    fork_for_copy,
    legacy_session_id,
    resolve,
)
from omnikernel.store.sessions import SessionStore


def turn(store: SessionStore, session: str, prompt: str, cell: str = "c1", n: int = 1) -> None:
    store.open_session(session, "nb")
    for event in (Event(EventKind.TURN_START, {"prompt": prompt}), ev.notice("done")):
        store.append(event.stamped(session_id=session, harness="claude", turn=n, cell=cell))


def notebook(path: Path, *cell_ids: str) -> Path:
    cells = [
        {
            "id": c,
            "cell_type": "code",
            "source": "",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        }
        for c in cell_ids
    ]
    path.write_text(
        json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


def test_a_notebook_id_keeps_its_session_whatever_the_path(store, tmp_path):
    first = resolve(
        {"OMNIKERNEL_NOTEBOOK_ID": "f1", "JPY_SESSION_NAME": "Untitled.ipynb"}, tmp_path, store
    )
    assert first.how == NEW and first.session_id.startswith("Untitled-")
    renamed = resolve(
        {"OMNIKERNEL_NOTEBOOK_ID": "f1", "JPY_SESSION_NAME": "analysis.ipynb"}, tmp_path, store
    )
    assert renamed.session_id == first.session_id and renamed.notebook.endswith("analysis.ipynb")
    # Another notebook at the first one's old path: a file id of its own, a session of its own.
    other = resolve(
        {"OMNIKERNEL_NOTEBOOK_ID": "f2", "JPY_SESSION_NAME": "Untitled.ipynb"}, tmp_path, store
    )
    assert other.session_id != first.session_id and other.how == NEW


def test_the_notebook_of_a_jupyter_session_is_read_from_the_store(store, tmp_path):
    # JupyterLab starts the kernel under a placeholder path and names the notebook after.
    env = {"OMNIKERNEL_JUPYTER_SESSION": "js-1", "JPY_SESSION_NAME": "3f2a-placeholder"}
    assert resolve(env, tmp_path, store).per_run  # not named yet
    store.record_jupyter_session("js-1", "f1", str(tmp_path / "analysis.ipynb"))
    named = resolve(env, tmp_path, store)
    assert named.notebook_id == "f1" and named.notebook == str(tmp_path / "analysis.ipynb")
    assert resolve(env, tmp_path, store).session_id == named.session_id


def test_without_a_notebook_id_each_run_is_new_unless_named(store, tmp_path):
    env = {"JPY_SESSION_NAME": "a.ipynb"}
    one, two = resolve(env, tmp_path, store), resolve(env, tmp_path, store)
    assert one.per_run and two.per_run and one.session_id != two.session_id
    named = resolve({**env, "OMNIKERNEL_SESSION_ID": "mine"}, tmp_path, store)
    assert (named.session_id, named.how, named.per_run) == ("mine", NAMED_BY_ENV, False)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "-x", "x" * 101, "a b"])
def test_session_names_that_could_escape_the_state_dir_are_refused(bad, store, tmp_path):
    with pytest.raises(SessionNameError):
        check_session_name(bad)
    if bad:  # an empty variable is no name at all
        with pytest.raises(SessionNameError):
            resolve({"OMNIKERNEL_SESSION_ID": bad}, tmp_path, store)


def test_a_copy_forks_and_the_original_is_untouched(store, tmp_path):
    original = resolve(
        {"OMNIKERNEL_NOTEBOOK_ID": "f1", "JPY_SESSION_NAME": "a.ipynb"}, tmp_path, store
    )
    assert fork_for_copy(store, "f1", "f9", "a-Copy1.ipynb") is None  # no turns yet: no fork
    turn(store, original.session_id, "remember FALCON-7")
    fork = fork_for_copy(store, "f1", "f2", str(tmp_path / "a-Copy1.ipynb"))
    copy = resolve(
        {"OMNIKERNEL_NOTEBOOK_ID": "f2", "JPY_SESSION_NAME": "a-Copy1.ipynb"}, tmp_path, store
    )
    assert copy.session_id == fork != original.session_id
    assert copy.how == f"forked from {original.session_id} when the notebook was duplicated"
    prompts = [e.data["prompt"] for e in store.events(fork, kinds=(EventKind.TURN_START,))]
    assert prompts == ["remember FALCON-7"]
    turn(store, fork, "only in the copy", n=2)
    assert store.last_turn(original.session_id) == 1 and store.last_turn(fork) == 2
    assert store.session(fork)["origin"] == original.session_id


def test_old_path_derived_sessions_migrate_to_their_own_notebook_only(store, tmp_path):
    env = {"JPY_SESSION_NAME": str(tmp_path / "Untitled.ipynb")}
    legacy, _ = legacy_session_id(env, tmp_path)
    turn(store, legacy, "remember FALCON-7", cell="cell-of-the-old-notebook")

    # A new notebook that merely has the old one's name does not get it...
    notebook(tmp_path / "Untitled.ipynb", "a-fresh-cell")
    fresh = resolve({**env, "OMNIKERNEL_NOTEBOOK_ID": "new"}, tmp_path, store)
    assert fresh.session_id != legacy and fresh.how == NEW
    # ...the notebook whose cells ran its turns does, once, and keeps it.
    notebook(tmp_path / "Untitled.ipynb", "x", "cell-of-the-old-notebook")
    migrated = resolve({**env, "OMNIKERNEL_NOTEBOOK_ID": "old"}, tmp_path, store)
    assert (migrated.session_id, migrated.how) == (legacy, MIGRATED)
    again = resolve({**env, "OMNIKERNEL_NOTEBOOK_ID": "old"}, tmp_path, store)
    assert again.session_id == legacy
    # Taken: a third notebook with the same cells (a copy made outside Jupyter) forks nothing.
    third = resolve({**env, "OMNIKERNEL_NOTEBOOK_ID": "third"}, tmp_path, store)
    assert third.session_id != legacy


def test_a_store_written_before_forks_opens_and_keeps_its_events(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, notebook TEXT NOT NULL, "
        "created REAL NOT NULL, updated REAL NOT NULL);"
        "CREATE TABLE events (session_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,"
        " kind TEXT NOT NULL, harness TEXT NOT NULL, turn INTEGER NOT NULL, cell TEXT NOT NULL,"
        " data TEXT NOT NULL, PRIMARY KEY (session_id, seq));"
        "INSERT INTO sessions VALUES ('a-0123456789', '/n/a.ipynb', 1, 2);"
        "INSERT INTO events VALUES ('a-0123456789', 1, 1, 'turn_start', 'claude', 1, 'c', "
        '\'{"prompt": "hi"}\');'
    )
    db.commit()
    db.close()
    store = SessionStore(path)
    assert store.session("a-0123456789") == {
        "session_id": "a-0123456789",
        "notebook": "/n/a.ipynb",
        "created": 1,
        "updated": 2,
        "events": 1,
        "turns": 1,
        "origin": "",
    }
    store.close()
