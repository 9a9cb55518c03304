"""Jupyter server extension of the Omnigent kernel: the session history over HTTP.

Enabled on `pip install` (``etc/jupyter/jupyter_server_config.d/omnikernel.json``). It reads the
same session store the kernels append to and serves it behind Jupyter's own authentication:

- ``GET <base_url>omnikernel/api/sessions``: every session (id, notebook, event count, times).
- ``GET <base_url>omnikernel/api/sessions/<id>/events?since=SEQ``: a session's events after
  SEQ, oldest first, so a late joiner replays exactly what happened and then polls from there.

The live share server on port 6767 builds on these.
"""

from __future__ import annotations

from typing import Any

from .handlers import setup_handlers


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_ext"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    setup_handlers(serverapp.web_app)
    serverapp.log.info("omnikernel: session API at %somnikernel/api/", serverapp.base_url)
