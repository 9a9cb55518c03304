"""Tell each kernel which notebook it runs, by an identity that follows the file.

jupyter_server starts a session's kernel with the notebook's *path* (``JPY_SESSION_NAME``), and a
path is not an identity: a new notebook gets the name a renamed one had, and a renamed one loses
its name. jupyter-server-fileid (the file ids jupyter-collaboration uses) keeps an id per file
that follows renames and moves made through Jupyter and is new for a copy or for a file created
again after a delete. This module:

- adds the notebook's file id to the kernel's environment as ``OMNIKERNEL_NOTEBOOK_ID``, by
  wrapping the session manager's `get_kernel_env` (the one place jupyter_server builds a
  session kernel's environment; wrapping the instance composes with other extensions, where
  replacing ``session_manager_class`` would not);
- listens to the contents service's events: a duplicated notebook gets a *fork* of the
  original's session (history copied, the original untouched), and a renamed or moved
  notebook's session records its new path. The kernel picks the session (`omnikernel.identity`).

Nothing here writes to notebook files, so an open JupyterLab never sees "file changed on disk".
"""

from __future__ import annotations

import os
from typing import Any

from omnikernel.identity import NOTEBOOK_ID_ENV, fork_for_copy
from omnikernel.store import SessionStore

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"


class NotebookIdentity:
    """Wires the file ids of one server into its kernels and its session store."""

    def __init__(self, serverapp: Any, store: SessionStore):
        self.serverapp = serverapp
        self.store = store
        self.log = serverapp.log

    @property
    def file_ids(self) -> Any:
        """jupyter-server-fileid's manager (loaded as its own extension), or None."""
        return self.serverapp.web_app.settings.get("file_id_manager")

    def install(self) -> None:
        manager = self.serverapp.session_manager
        original = manager.get_kernel_env

        def get_kernel_env(path: str | None, name: str | None = None) -> dict[str, str]:
            env = original(path, name)
            if notebook_id := self.notebook_id(path):
                env[NOTEBOOK_ID_ENV] = notebook_id
            return env

        manager.get_kernel_env = get_kernel_env
        self.serverapp.event_logger.add_listener(schema_id=CONTENTS_EVENTS, listener=self.on_event)
        if self.file_ids is None:
            self.log.warning(
                "omnikernel: jupyter-server-fileid is not enabled, so kernels cannot tell which "
                "notebook they run and each run starts a new agent session. Enable it with "
                "`jupyter server extension enable jupyter_server_fileid`."
            )

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
