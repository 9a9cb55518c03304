"""The share page under the user's own server: ``<base_url>omnikernel/share/...``.

Under JupyterHub a user's port 6767 is unreachable; their server's base URL
(``/user/alice/``) is reachable, through the hub's proxy, TLS and domain. These routes serve
the same live page as the share server, to hub users the session is shared with by name
(``%share with bob``, ``%share with group:data-team``):

- ``GET live?session=ID``: the page's shell (no session data).
- ``GET static/NAME``: its script and style.
- ``GET api/grant?session=ID``: what the visitor may do in that session (role, whether they
  may answer approvals), or 403.
- ``POST api/answer?session=ID``, ``POST api/prompt?session=ID``: a co-driver's answer or
  prompt, written to the store for the kernel to take, under the visitor's hub name.
- ``GET ws?session=ID&since=SEQ`` (WebSocket): the events, then live.

What authorises each request, in order:

1. JupyterHub's sign-in (the single-user server's IdentityProvider: the hub's OAuth). Only a
   hub user holding ``access:servers`` on this server gets past it: the owner, and whoever a
   JupyterHub share lets in (``%share with`` creates that share through the hub API).
2. The Authorizer (`jupyter_ext.hub.authorizer`): every route here asks for `SHARE_RESOURCE`;
   a visitor is authorised for that resource and for nothing else of the owner's.
3. The session's grants in the store (`omnikernel.store.shares`): the visitor's hub name, or
   one of their hub groups, must hold a usable grant for the session asked for; the owner may
   always follow their own sessions. Revoking a grant closes the visitor's open pages on the
   next tick (`ShareServer.tick`), whatever the hub's cached sign-in says.
4. Jupyter Server's own checks: Host, XSRF and Origin on POSTs; a WebSocket needs an Origin
   naming this server (a missing one is refused too, unlike Jupyter's default).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado import web, websocket

from jupyter_ext.hub.authorizer import SHARE_RESOURCE, SharedSessionAuthorizer, server_owner
from jupyter_ext.share import bodies
from jupyter_ext.share.feed import FrameWriter
from jupyter_ext.share.page import STATIC, live_page
from jupyter_ext.share.server import (
    WS_PROTOCOL,
    JsonErrors,
    ShareServer,
    give_answer,
    queue_prompt,
)
from omnikernel.store.shares import CO_DRIVE, OWNER_CODE_ID, ROLE_NAMES, Code

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def hub_identity(user: Any) -> tuple[str, list[str]]:
    """The hub name and groups of a signed-in user (JupyterHub's user model)."""
    model = getattr(user, "hub_user", None) or {}
    name = str(model.get("name") or getattr(user, "username", ""))
    return name, [str(g) for g in model.get("groups") or []]


class HubShareMixin:
    """The grant check shared by the page's routes (see the module docstring)."""

    auth_resource = SHARE_RESOURCE
    request: Any
    settings: dict[str, Any]
    current_user: Any
    authorizer: Any

    @property
    def share(self) -> ShareServer:
        share = self.settings.get("omnikernel_hub_share")
        if share is None:
            raise web.HTTPError(404, "sharing by name is off on this server")
        return share

    def session_id(self) -> str:
        session = self.request.query_arguments.get("session", [b""])[0].decode(errors="replace")
        if not session or len(session) > 200:
            raise web.HTTPError(400, "say which session: ?session=ID")
        return session

    def visitor(self) -> str:
        return hub_identity(self.current_user)[0]

    def grant(self) -> Code:
        """The visitor's grant to the session asked for, or 403."""
        if not isinstance(self.authorizer, SharedSessionAuthorizer):
            # Jupyter Server's default Authorizer would give a visitor everything the owner has.
            raise web.HTTPError(
                503,
                "this server shares sessions only with omnikernel's Authorizer: set "
                "c.ServerApp.authorizer_class = "
                "'jupyter_ext.hub.authorizer.SharedSessionAuthorizer' (docs/hub.md)",
            )
        session = self.session_id()
        name, groups = hub_identity(self.current_user)
        if name and name == server_owner():
            return Code(OWNER_CODE_ID, session, CO_DRIVE, float("inf"), None, name)
        code = self.share.codes.granted_to(session, name, groups)
        if code is None:
            raise web.HTTPError(403, f"{name or 'you'} may not follow this session")
        return code


class HubPageHandler(JsonErrors, HubShareMixin, JupyterHandler):
    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")


class LivePageHandler(HubPageHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        base = url_path_join(self.base_url, "omnikernel", "share") + "/"
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(live_page(base, "hub", self.xsrf_token.decode()))


class StaticFileHandler(HubPageHandler):
    @web.authenticated
    @authorized
    def get(self, name: str) -> None:
        if name not in STATIC:
            raise web.HTTPError(404, "no such file")
        kind, text = STATIC[name]
        self.set_header("Content-Type", kind)
        self.finish(text)


class GrantHandler(HubPageHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        code = self.grant()
        row = self.share.store.session(code.session_id)
        self.finish(
            {
                "session": code.session_id,
                "role": code.role,
                "role_name": ROLE_NAMES[code.role],
                "notebook": Path(str(row["notebook"])).name if row else "",
                "may_answer": self.share.may_answer(code),
                "who": self.visitor(),
            }
        )


class CoDriverHandler(HubPageHandler):
    """A request only a co-driver's grant may make (an answer, a prompt), its body capped."""

    def co_driver(self, limit: int, too_large: str) -> Code:
        code = self.grant()
        if code.role != CO_DRIVE:
            raise web.HTTPError(403, "you follow this session read-only")
        if len(self.request.body) > limit:
            raise web.HTTPError(413, f"{too_large} (at most {limit} bytes)")
        return code


class AnswerHandler(CoDriverHandler):
    @web.authenticated
    @authorized
    def post(self) -> None:
        code = self.co_driver(bodies.ANSWER_BODY_BYTES, "the body is too large")
        try:
            request_id, allow = bodies.answer(self.request.body)
        except bodies.BodyError as exc:
            raise web.HTTPError(400, str(exc)) from None
        status, result = give_answer(self.share, code, request_id, allow, self.visitor())
        self.set_status(status)
        self.finish({"result": result})


class PromptHandler(CoDriverHandler):
    @web.authenticated
    @authorized
    def post(self) -> None:
        code = self.co_driver(bodies.PROMPT_BODY_BYTES, "the prompt is too long")
        try:
            text = bodies.prompt(self.request.body)
        except bodies.BodyError as exc:
            raise web.HTTPError(400, str(exc)) from None
        status, result = queue_prompt(self.share, code, text, self.visitor())
        self.set_status(status)
        self.finish(result)


class LiveSocket(HubShareMixin, WebSocketMixin, FrameWriter, JupyterHandler):
    """The events of one session, then live; what the client sends is ignored. The frames are
    the share server's (`FrameWriter`): one implementation of the fan-out for both."""

    code: Code
    watcher_id = ""
    following = False

    def set_default_headers(self) -> None:
        """No page headers on a WebSocket (as Jupyter's kernel socket)."""

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return WS_PROTOCOL if WS_PROTOCOL in subprotocols else None

    def check_origin(self, origin: str | None = None) -> bool:
        if not origin:
            return False
        return urlsplit(origin).netloc == self.request.host

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if not self.request.headers.get("Origin"):
            raise web.HTTPError(403, "a WebSocket needs an Origin")
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "sign in with the hub first")
        if not self.authorizer.is_authorized(self, user, "read", SHARE_RESOURCE):
            raise web.HTTPError(403)
        self.code = self.grant()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        try:
            since = max(0, int(self.get_query_argument("since", "0")))
        except ValueError:
            since = 0
        share, link = self.share, self.code.code_id
        if not share.catch_ups.may_start(link + self.visitor()):
            self.close(4429, "this page is already catching up elsewhere; retrying shortly")
            return
        self.watcher_id = secrets.token_hex(8)
        share.watching(self.watcher_id, self.code.session_id, self.code.role, self.visitor())
        feed = share.feed(self.code.session_id)
        share.catch_ups.started(link + self.visitor())
        feed.catching_up += 1
        try:
            async with share.catch_ups.slots:
                await feed.loaded()
                await feed.catch_up(since, self.write_frame)
        except websocket.WebSocketClosedError:
            return
        finally:
            feed.catching_up -= 1
            share.catch_ups.ended(link + self.visitor())
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.open_for_frames()
            feed.follow(self)
            self.following = True

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.share.leave(self)  # type: ignore[arg-type]
        if self.watcher_id:
            self.share.left(self.watcher_id)


def setup_hub_share(serverapp: Any, store_path: Path, approvers: str) -> ShareServer | None:
    """Under JupyterHub, serve the share page under this server's base URL (and tick its
    feeds); elsewhere nothing (the share server on port 6767 serves links)."""
    if server_owner() is None:
        return None
    web_app = serverapp.web_app
    share = ShareServer(store_path, approvers=approvers, anonymous_links=False)
    web_app.settings["omnikernel_hub_share"] = share
    base = url_path_join(web_app.settings["base_url"], "omnikernel", "share")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "live"), LivePageHandler),
            (url_path_join(base, r"static/([a-z]+\.(?:js|css))"), StaticFileHandler),
            (url_path_join(base, "api", "grant"), GrantHandler),
            (url_path_join(base, "api", "answer"), AnswerHandler),
            (url_path_join(base, "api", "prompt"), PromptHandler),
            (url_path_join(base, "ws"), LiveSocket),
        ],
    )
    return share
