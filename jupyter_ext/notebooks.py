"""Tell each kernel which notebook it runs, by an identity that follows the file.

jupyter_server starts a session's kernel with the notebook's *path* (``JPY_SESSION_NAME``), and a
path is not an identity: a new notebook gets the name a renamed one had, and a renamed one loses
its name. jupyter-server-fileid (the file ids jupyter-collaboration uses) keeps an id per file
that follows renames and moves made through Jupyter and is new for a copy or for a file created
again after a delete. This module:

- tells the kernel which notebook it runs. JupyterLab 4 starts a notebook's kernel under a
  placeholder path (a random uuid) and names the notebook a moment later, by updating the
  session's path. So the kernel gets its Jupyter session id in ``OMNIKERNEL_JUPYTER_SESSION``,
  and each time a session is started or its path set, the notebook's file id is written to
  the session store under that session id; the kernel reads it before its first cell. When the
  path already names the notebook at start (and for restarts, whose environment jupyter_server
  refreshes on every path update), ``OMNIKERNEL_NOTEBOOK_ID`` carries the id directly. Both
  wrap the session manager's methods on the instance (`get_kernel_env`, the one place it builds
  a kernel's environment, `start_kernel_for_session` and `update_session`), which composes
  with other extensions where replacing ``session_manager_class`` would not;
- listens to the contents service's events: a duplicated notebook gets a *fork* of the
  original's session (history copied, the original untouched), and a renamed or moved
  notebook's session records its new path. The kernel picks the session (`omnikernel.session.identity`).

Nothing here writes to notebook files, so an open JupyterLab never sees "file changed on disk".
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
from typing import Any

from omnikernel.session.identity import JUPYTER_SESSION_ENV, NOTEBOOK_ID_ENV, fork_for_copy
from omnikernel.store.sessions import SessionStore

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
#: The Jupyter session whose kernel is being started (read by the `get_kernel_env` wrapper).
_starting: contextvars.ContextVar[str | None] = contextvars.ContextVar("starting", default=None)


class NotebookIdentity:
    """Wires the file ids of one server into its kernels and its session store."""

    def __init__(self, serverapp: Any, store: SessionStore):
        self.serverapp = serverapp
        self.store = store
        self.log = serverapp.log
        self._warned = False

    @property
    def file_ids(self) -> Any:
        """jupyter-server-fileid's manager (loaded as its own extension), or None."""
        return self.serverapp.web_app.settings.get("file_id_manager")

    def install(self) -> None:
        manager = self.serverapp.session_manager
        get_env, start, update = (
            manager.get_kernel_env,
            manager.start_kernel_for_session,
            manager.update_session,
        )

        def get_kernel_env(path: str | None, name: str | None = None) -> dict[str, str]:
            env = get_env(path, name)
            if session := _starting.get():
                env[JUPYTER_SESSION_ENV] = session
            if notebook_id := self.notebook_id(path):
                env[NOTEBOOK_ID_ENV] = notebook_id
            return env

        async def start_kernel_for_session(
            session_id: str, path: str | None, *args: Any, **kwargs: Any
        ) -> str:
            self.record(session_id, path)
            token = _starting.set(session_id)
            try:
                return await start(session_id, path, *args, **kwargs)
            finally:
                _starting.reset(token)

        async def update_session(session_id: str, **kwargs: Any) -> None:
            await update(session_id, **kwargs)
            if kwargs.get("path"):
                self.record(session_id, kwargs["path"])

        manager.get_kernel_env = get_kernel_env
        manager.start_kernel_for_session = start_kernel_for_session
        manager.update_session = update_session
        self.serverapp.event_logger.add_listener(schema_id=CONTENTS_EVENTS, listener=self.on_event)

    def record(self, session_id: str, path: str | None) -> None:
        """Note in the store which notebook Jupyter session `session_id` now names."""
        if self.file_ids is None:
            if self._warned:
                return
            self._warned = True
            self.log.warning(
                "omnikernel: jupyter-server-fileid is not enabled, so kernels cannot tell which "
                "notebook they run and each run starts a new agent session. Enable it with "
                "`jupyter server extension enable jupyter_server_fileid`."
            )
            return
        try:
            if notebook_id := self.notebook_id(path):
                assert path is not None
                self.store.record_jupyter_session(session_id, notebook_id, self.os_path(path))
        except sqlite3.Error as exc:  # never keep a notebook's kernel from starting
            self.log.error("omnikernel: could not note the notebook of %s: %s", path, exc)

    def notebook_id(self, path: str | None) -> str | None:
        """The file id of the notebook at API `path`, if that is a notebook file."""
        ids = self.file_ids
        if ids is None or not path or not path.endswith(".ipynb"):
            return None
        path = path.strip("/")
        # A session's path may be a placeholder that names no file (REST clients do that):
        # indexing it would hand its id to whichever file is created there later.
        if not os.path.isfile(self.os_path(path)):
            return None
        return ids.index(path)

    def os_path(self, api_path: str) -> str:
        return os.path.join(self.serverapp.root_dir, *api_path.strip("/").split("/"))

    async def on_event(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        action, path = data.get("action"), str(data.get("path", "")).strip("/")
        source = str(data.get("source_path") or "").strip("/")
        ids = self.file_ids
        if ids is None or not path.endswith(".ipynb"):
            return
        if action == "copy" and source:
            origin = ids.get_id(source)
            if origin is None:
                return  # the original never ran a kernel: nothing to fork
            fork = fork_for_copy(self.store, origin, ids.index(path), self.os_path(path))
            if fork:
                self.log.info("omnikernel: %s is a copy of %s: session %s", path, source, fork)
        elif action == "rename":
            # Either listener may run first: the id is under the new path or still the old one.
            notebook_id = ids.get_id(path) or (ids.get_id(source) if source else None)
            bound = self.store.notebook_binding(notebook_id) if notebook_id else None
            if bound:
                self.store.set_notebook_path(bound[0], self.os_path(path))
