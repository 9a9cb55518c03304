"""Jupyter server extension of the Omnigent kernel: the session history over HTTP.

Enabled on `pip install` (``etc/jupyter/jupyter_server_config.d/omnikernel.json``). It reads the
same session store the kernels append to and serves it behind Jupyter's own authentication:

- ``GET <base_url>omnikernel/api/sessions``: every session (id, notebook, event count, times).
- ``GET <base_url>omnikernel/api/sessions/<id>/events?since=SEQ``: a session's events after
  SEQ, oldest first, so a late joiner replays exactly what happened and then polls from there.

The live share server on port 6767 builds on these. It also tells each kernel which notebook
it runs, by a file id that follows renames (`notebooks`), so a notebook keeps its own session.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    from jupyter_ext.share.app import OmnikernelShare

    return [{"module": "jupyter_ext"}, {"module": "jupyter_ext.share.app", "app": OmnikernelShare}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    # Imported here: the kernel imports `omnikernel.store.shares`, and must not load
    # jupyter_server's handlers (about 0.1 s) while it starts.
    from jupyter_ext.handlers import setup_handlers
    from jupyter_ext.notebooks import NotebookIdentity
    from omnikernel.kernel.settings import SessionFiles
    from omnikernel.store.sessions import SessionStore

    path = SessionFiles(config=serverapp.config).store
    store = serverapp.web_app.settings.setdefault("omnikernel_store", SessionStore(path))
    setup_handlers(serverapp.web_app)
    NotebookIdentity(serverapp, store).install()
    serverapp.log.info("omnikernel: session API at %somnikernel/api/", serverapp.base_url)
