"""Which session a kernel continues: decided by the notebook's identity, never by its path.

Paths are a poor identity: every new notebook starts as ``Untitled.ipynb`` and people rename
notebooks all the time. The server extension (`jupyter_ext.notebooks`) therefore passes each
kernel the notebook's *file id* (jupyter-server-fileid's, the one the collaboration stack uses) in
``OMNIKERNEL_NOTEBOOK_ID``: it follows renames and moves made through Jupyter, and a copy or a
file created again at a deleted file's path gets a new one. The store binds a file id to the
session the notebook uses now. Rules, first match wins:

1. ``OMNIKERNEL_SESSION_ID`` names the session explicitly.
2. With a notebook id (from ``OMNIKERNEL_NOTEBOOK_ID``, or noted in the store for the Jupyter
   session in ``OMNIKERNEL_JUPYTER_SESSION``: JupyterLab names the notebook only after the
   kernel started, so the kernel asks again before its first cell):
   a. the session bound to it (a duplicate's was bound to a fork when it was copied);
   b. migration: the session an older omnikernel derived from this notebook's path, if no other
      notebook took it and the notebook still holds a cell that ran one of its turns (so a new
      notebook that merely got the same name never inherits it);
   c. otherwise a new session, bound to the id.
3. Without one (nbclient, papermill, ``jupyter console``, a server without the extension: none
   of them says which notebook the kernel runs): a new session for this run, and the first
   prompt cell says so and how to continue a named one.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omnikernel.store.sessions import SessionStore

SESSION_ID_ENV = "OMNIKERNEL_SESSION_ID"
NOTEBOOK_ID_ENV = "OMNIKERNEL_NOTEBOOK_ID"
#: The Jupyter session the kernel serves; the server extension notes its notebook in the store.
JUPYTER_SESSION_ENV = "OMNIKERNEL_JUPYTER_SESSION"
#: A session id is also a directory name (the harnesses' private homes), so keep it plain.
SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")

#: How a notebook's session was chosen, as `%session` says it.
NEW = "new for this notebook"
MIGRATED = "migrated from the session an older omnikernel kept under this notebook's path"
NAMED_BY_ENV = f"named by {SESSION_ID_ENV}"
NEW_THIS_RUN = (
    "new for this run: the kernel was not started by a Jupyter server with the omnikernel "
    "extension, so it cannot tell which notebook it runs"
)


@dataclass(frozen=True)
class Identity:
    session_id: str
    #: The notebook's path when the kernel started (the working directory when unknown).
    notebook: str
    #: The server's file id of the notebook; empty when the kernel does not know it.
    notebook_id: str
    how: str

    @property
    def per_run(self) -> bool:
        """True when nothing ties the session to a notebook or a name (rule 3)."""
        return self.how == NEW_THIS_RUN


class SessionNameError(ValueError):
    pass


def check_session_name(name: str) -> str:
    if not SESSION_NAME.fullmatch(name):
        raise SessionNameError(
            f"{name!r} is not a session name: use letters, digits, '.', '_' or '-' "
            "(up to 100, starting with a letter or digit)"
        )
    return name


def new_session_id(notebook: str) -> str:
    """A fresh id: the notebook's name (readable in lists) and 40 random bits."""
    stem = Path(notebook).stem if notebook.endswith(".ipynb") else "session"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "session"
    return f"{stem[:50]}-{secrets.token_hex(5)}"


def legacy_session_id(env: Mapping[str, str], cwd: Path) -> tuple[str, str]:
    """(id, path) exactly as omnikernel derived them from the path before file ids."""
    notebook = env.get("JPY_SESSION_NAME", "")
    path = (cwd / notebook).resolve() if notebook else cwd.resolve()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem or "session").strip("-") or "session"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"{stem}-{digest}", str(path)


def notebook_cell_ids(path: Path) -> set[str] | None:
    """The cell ids in a notebook file, or None when it cannot be read as one."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        return None
    return {c["id"] for c in cells if isinstance(c, dict) and isinstance(c.get("id"), str)}


def _migratable(store: SessionStore, legacy_id: str, path: Path) -> bool:
    """The path-derived session belongs to the notebook now at `path` (see rule 2b)."""
    if store.session(legacy_id) is None or store.notebooks_of(legacy_id):
        return False
    ran_in = store.cells_of(legacy_id)
    if not ran_in:
        return True  # nothing better than the path to go by (turns without cell ids)
    cells = notebook_cell_ids(path)
    return bool(cells and cells & ran_in)


def resolve(env: Mapping[str, str], cwd: Path, store: SessionStore) -> Identity:
    """The session this kernel continues, by the rules in the module docstring. Binds a
    notebook seen for the first time (rules 2b and 2c)."""
    notebook_id, named = env.get(NOTEBOOK_ID_ENV, ""), env.get("JPY_SESSION_NAME", "")
    if not notebook_id and (jupyter_session := env.get(JUPYTER_SESSION_ENV)):
        if found := store.jupyter_session_notebook(jupyter_session):
            notebook_id, named = found
    legacy_id, path = legacy_session_id({"JPY_SESSION_NAME": named} if named else {}, cwd)
    if explicit := env.get(SESSION_ID_ENV):
        return Identity(check_session_name(explicit), path, notebook_id, NAMED_BY_ENV)
    if not notebook_id:
        return Identity(new_session_id(path), path, "", NEW_THIS_RUN)
    if bound := store.notebook_binding(notebook_id):
        return Identity(bound[0], path, notebook_id, bound[1])
    if named and _migratable(store, legacy_id, Path(path)):
        store.bind_notebook(notebook_id, legacy_id, MIGRATED)
        return Identity(legacy_id, path, notebook_id, MIGRATED)
    session_id = new_session_id(path)
    store.bind_notebook(notebook_id, session_id, NEW)
    return Identity(session_id, path, notebook_id, NEW)


def fork_for_copy(
    store: SessionStore, origin_notebook_id: str, copy_notebook_id: str, copy_path: str
) -> str | None:
    """Bind a copied notebook to a fork of the original's session (the server extension calls
    this when a notebook is duplicated). None when the original has no session to fork."""
    bound = store.notebook_binding(origin_notebook_id)
    if bound is None or store.session(bound[0]) is None:
        return None
    fork_id = new_session_id(copy_path)
    store.fork_session(bound[0], fork_id, copy_path)
    store.bind_notebook(
        copy_notebook_id, fork_id, f"forked from {bound[0]} when the notebook was duplicated"
    )
    return fork_id
