"""HTTP handlers of the session API (see the package docstring). Read-only."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from omnikernel.kernel.settings import SessionFiles
from omnikernel.store.sessions import SessionStore

#: Most events one response carries; a client asks again from the last seq it got.
PAGE_SIZE = 5000


class StoreHandler(APIHandler):
    #: Asked of the Authorizer on every request: under JupyterHub only the server's owner holds
    #: it (`jupyter_ext.hub.authorizer`), not a visitor a share of one session let in.
    auth_resource = "omnikernel-sessions"

    @property
    def store(self) -> SessionStore:
        store = self.settings.get("omnikernel_store")
        if store is None:
            path = SessionFiles(config=self.settings.get("config")).store
            store = self.settings["omnikernel_store"] = SessionStore(path)
        return store


class SessionsHandler(StoreHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.finish(json.dumps({"sessions": self.store.sessions()}))


class EventsHandler(StoreHandler):
    @web.authenticated
    @authorized
    def get(self, session_id: str) -> None:
        try:
            since = int(self.get_query_argument("since", "0"))
        except ValueError:
            raise web.HTTPError(400, "since must be an integer sequence number") from None
        known = {s["session_id"] for s in self.store.sessions()}
        if session_id not in known:
            raise web.HTTPError(404, f"no session {session_id!r}")
        events: list[dict[str, Any]] = []
        for event in self.store.events(session_id, since=since):
            events.append(event.to_dict())
            if len(events) >= PAGE_SIZE:
                break
        last = events[-1]["seq"] if events else since
        self.finish(json.dumps({"session_id": session_id, "events": events, "last_seq": last}))


def setup_handlers(web_app: Any) -> None:
    base = web_app.settings["base_url"]
    api = url_path_join(base, "omnikernel", "api", "sessions")
    web_app.add_handlers(
        ".*$",
        [
            (api, SessionsHandler),
            (url_path_join(api, r"([^/]+)", "events"), EventsHandler),
        ],
    )
