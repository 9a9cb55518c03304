"""The share server: a session's live page for whoever holds a link, on port 6767.

One tornado application, run in the jupyter server's own loop (`jupyter_ext.share.app`) or
standalone (``python -m jupyter_ext.share``). It reads the session store; it acts on nothing
but what a co-driver sends: approval answers and prompts, which it writes to the store for the
kernel to take (`codes`, `omnikernel.codrive`).

Rules, checked before any handler code runs (`ShareHandler.prepare`):

- ``Host`` must name this server (its address and port, loopback names, or the configured
  host names): a rebound DNS name is refused with 403.
- ``GET /join?code=...`` only shows a confirmation page; the ``POST`` from it (with tornado's
  XSRF token) exchanges the code for an HttpOnly, SameSite=Strict cookie holding a fresh grant
  (256 bits, stored hashed). Failed codes count against the client's address: after
  `FAILURES_ALLOWED` in `FAILURE_WINDOW_S` it gets 429 without a lookup.
- Every other page and the WebSocket need a cookie whose grant's code is neither revoked nor
  expired. Every state-changing request carries the XSRF token; the WebSocket's ``Origin`` must
  be this server (a missing one is refused too). Read-only grants may only read.
- Each open socket re-checks its code on every tick; revoking a code closes its sockets.
- Codes, grants and cookies are never logged: the access log shows the path without its query.
"""

from __future__ import annotations

import asyncio
import collections
import html
import ipaddress
import json
import logging
import secrets
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado import httpserver, ioloop, web, websocket
from tornado.netutil import bind_sockets

from omnikernel.events import EventKind
from omnikernel.store import SessionStore

from .codes import CO_DRIVE, MAX_PROMPT_CHARS, ROLE_NAMES, Code, ShareCodes
from .page import CONFIRM_PAGE, LIVE_PAGE
from .render import event_message

log = logging.getLogger("omnikernel.share")

COOKIE = "omk_share"
FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 60.0
TICK_S = 0.05
#: How often links, answers and prompts that can never be used again leave the store.
PURGE_EVERY_S = 3600.0
#: Events sent per catch-up message, so a long history does not make one huge frame.
CATCH_UP_BATCH = 500


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Feed:
    """The viewers of one session and the last event they all have."""

    def __init__(self, last: int):
        self.last = last
        self.sockets: set[LiveSocket] = set()


class ShareServer:
    """Serve share links of the sessions in one store. `start` in a running loop (or before
    the jupyter server's loop starts); `stop` closes every socket and the listener."""

    def __init__(self, store_path: Path | str | None = None, address: str = "127.0.0.1",
                 port: int = 6767, hostnames: Iterable[str] = (), certfile: str = "",
                 keyfile: str = "", clock: Any = time.time):  # fmt: skip
        self.store = SessionStore(store_path)
        self.codes = ShareCodes(self.store.path, clock=clock)
        self.address = address
        self.port = port
        self.hostnames = tuple(hostnames)
        self.certfile, self.keyfile = certfile, keyfile
        self.feeds: dict[str, Feed] = {}
        self.failures: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._server: httpserver.HTTPServer | None = None
        self._ticker: ioloop.PeriodicCallback | None = None
        self._purger: ioloop.PeriodicCallback | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    @property
    def url(self) -> str:
        host = self.address if self.address not in ("0.0.0.0", "::", "") else (
            self.hostnames[0] if self.hostnames else "127.0.0.1")  # fmt: skip
        return f"{self.scheme}://{host}:{self.port}"

    def allowed_hosts(self) -> set[str]:
        names = {"127.0.0.1", "localhost", "[::1]", *self.hostnames}
        if self.address not in ("0.0.0.0", "::", ""):
            names.add(self.address)
        return {f"{name}:{self.port}" for name in names}

    def app(self) -> web.Application:
        return web.Application(
            [
                (r"/join", JoinHandler),
                (r"/live", LiveHandler),
                (r"/api/answer", AnswerHandler),
                (r"/api/prompt", PromptHandler),
                (r"/ws", LiveSocket),
            ],
            share=self,
            xsrf_cookies=True,
            xsrf_cookie_kwargs={
                "httponly": False,
                "samesite": "Strict",
                "secure": self.scheme == "https",
            },  # fmt: skip
            log_function=log_request,
            websocket_ping_interval=20,
        )

    def start(self) -> None:
        """Listen (the port is taken now, so a clash is reported at once) and start ticking."""
        if not is_loopback(self.address):
            log.warning("omnikernel share server listens on %s: anyone on that network who has "
                        "a link can open it%s", self.address,
                        "" if self.certfile else ", and without TLS they can read it on the "
                        "wire (set a certificate)")  # fmt: skip
        sockets = bind_sockets(self.port, self.address)
        self.port = sockets[0].getsockname()[1]
        context = None
        if self.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certfile, self.keyfile or None)
        self._server = httpserver.HTTPServer(self.app(), ssl_options=context, xheaders=False)
        self._server.add_sockets(sockets)
        self._ticker = ioloop.PeriodicCallback(self.tick, TICK_S * 1000)
        self._ticker.start()
        self._purger = ioloop.PeriodicCallback(self.purge, PURGE_EVERY_S * 1000)
        self._purger.start()
        self.purge()
        self.codes.server_started(self.url)
        log.info("omnikernel share server at %s", self.url)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self._purger is not None:
            self._purger.stop()
        for feed in list(self.feeds.values()):
            for sock in list(feed.sockets):
                sock.close(1001, "the share server is stopping")
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
            self.codes.server_stopped(self.url)

    # -- the live feed --------------------------------------------------------------------------

    def join(self, sock: LiveSocket, since: int) -> None:
        """Send `sock` everything after `since` up to the feed's mark, then add it to the feed,
        in one step of the loop: nothing in between can be missed or sent twice."""
        session_id = sock.code.session_id
        feed = self.feeds.get(session_id)
        if feed is None:
            feed = self.feeds[session_id] = Feed(since)
            self._advance(session_id, feed, deliver=False)
        batch: list[dict[str, Any]] = []
        for event in self.store.events(session_id, since=since):
            if event.seq > feed.last:
                break
            batch.append(event_message(event))
            if len(batch) >= CATCH_UP_BATCH:
                sock.send({"events": batch})
                batch = []
        if batch:
            sock.send({"events": batch})
        feed.sockets.add(sock)

    def leave(self, sock: LiveSocket) -> None:
        feed = self.feeds.get(sock.code.session_id)
        if feed is not None:
            feed.sockets.discard(sock)

    def _advance(self, session_id: str, feed: Feed, deliver: bool = True) -> None:
        messages = [event_message(e) for e in self.store.events(session_id, since=feed.last)]
        if not messages:
            return
        feed.last = messages[-1]["seq"]
        if deliver:
            frame = json.dumps({"events": messages})
            for sock in list(feed.sockets):
                sock.send_raw(frame)

    def tick(self) -> None:
        """New events to every viewer; sockets of revoked or expired links closed."""
        open_codes = {s.code.code_id for f in self.feeds.values() for s in f.sockets}
        ended = self.codes.revoked_among(open_codes)
        for session_id, feed in list(self.feeds.items()):
            for sock in list(feed.sockets):
                if sock.code.code_id in ended:
                    feed.sockets.discard(sock)
                    sock.close(4403, "this share link was revoked or has expired")
            if feed.sockets:
                self._advance(session_id, feed)

    def purge(self) -> None:
        if gone := self.codes.purge():
            log.info("share: purged %d expired link, answer and prompt rows", gone)

    # -- failed codes ---------------------------------------------------------------------------

    def too_many_failures(self, client: str) -> bool:
        window = self.failures[client]
        now = time.monotonic()
        while window and now - window[0] > FAILURE_WINDOW_S:
            window.popleft()
        return len(window) >= FAILURES_ALLOWED

    def failed(self, client: str) -> None:
        self.failures[client].append(time.monotonic())


class ShareHandler(web.RequestHandler):
    """Host check first; the grant (from the cookie) for everything but joining."""

    code: Code | None = None

    @property
    def share(self) -> ShareServer:
        return self.settings["share"]

    def prepare(self) -> None:
        if self.request.host not in self.share.allowed_hosts():
            raise web.HTTPError(403, "unknown Host (DNS rebinding?)")
        origin = self.request.headers.get("Origin")
        if self.request.method == "POST" and origin is not None and not self.same_origin(origin):
            raise web.HTTPError(403, "cross-origin request")
        self.code = self.share.codes.granted(self.get_cookie(COOKIE))

    def same_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme == self.share.scheme and parts.netloc == self.request.host

    def require(self, role: str | None = None) -> Code:
        if self.code is None:
            raise web.HTTPError(403, "open your share link again (it may have been revoked or "
                                "expired)")  # fmt: skip
        if role is not None and self.code.role != role:
            raise web.HTTPError(403, "this is a read-only link")
        return self.code

    def who(self) -> str:
        role = ROLE_NAMES[self.code.role] if self.code else "viewer"
        return f"{role} at {self.request.remote_ip}"

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
                        "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                        "frame-ancestors 'none'")  # fmt: skip
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        if "exc_info" in kwargs and isinstance(kwargs["exc_info"][1], web.HTTPError):
            reason = kwargs["exc_info"][1].log_message or reason
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {reason}\n")


class JoinHandler(ShareHandler):
    def get(self) -> None:
        code = self.get_query_argument("code", "")
        self.finish(CONFIRM_PAGE.format(code=html.escape(code, quote=True),
                                        xsrf=self.xsrf_form_html()))  # fmt: skip

    def post(self) -> None:
        client = self.request.remote_ip or "?"
        if self.share.too_many_failures(client):
            raise web.HTTPError(429, "too many wrong codes; wait a minute")
        code = self.share.codes.lookup(self.get_body_argument("code", ""))
        if code is None:
            self.share.failed(client)
            log.warning("share: a wrong, revoked or expired code from %s", client)
            raise web.HTTPError(403, "this link is wrong, revoked or expired")
        self.set_cookie(COOKIE, self.share.codes.grant(code), httponly=True, samesite="Strict",
                        secure=self.share.scheme == "https", path="/",
                        expires=code.expires)  # fmt: skip
        self.redirect("/live", status=303)


class LiveHandler(ShareHandler):
    def get(self) -> None:
        code = self.require()
        self.finish(LIVE_PAGE.replace("{{role}}", code.role)
                    .replace("{{xsrf}}", html.escape(self.xsrf_token.decode()))
                    .replace("{{session}}", html.escape(code.session_id)))  # fmt: skip


class AnswerHandler(ShareHandler):
    def post(self) -> None:
        code = self.require(CO_DRIVE)
        try:
            body = json.loads(self.request.body or b"{}")
            request_id, allow = str(body["request_id"]), bool(body["allow"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPError(400, 'send {"request_id": ..., "allow": true|false}') from None
        asked = decided = None
        for event in self.share.store.events(code.session_id, kinds=(
                EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION)):  # fmt: skip
            if event.data.get("request_id") == request_id:
                if event.kind == EventKind.APPROVAL_REQUEST:
                    asked = event
                else:
                    decided = event
        if asked is None:
            raise web.HTTPError(404, "no such approval in this session")
        if decided is not None:
            self.set_status(409)
            self.finish({"result": f"too late: {decided.data.get('reason', 'already decided')}"})
            return
        if (given := self.share.codes.given_answer(code.session_id, request_id)) is not None:
            self.set_status(409)
            verb = "approved" if given[0] else "denied"
            self.finish({"result": f"too late: already {verb} by {given[1]} ({given[2]})"})
            return
        self.share.codes.post_answer(code.session_id, request_id, allow, self.who(),
                                     "share page")  # fmt: skip
        self.set_status(202)
        self.finish({"result": "sent"})


class PromptHandler(ShareHandler):
    """A co-driver's prompt, queued for the kernel that shows the session's feed."""

    def post(self) -> None:
        code = self.require(CO_DRIVE)
        try:
            text = json.loads(self.request.body or b"{}")["text"]
        except (ValueError, KeyError, TypeError):
            raise web.HTTPError(400, 'send {"text": "your prompt"}') from None
        if not isinstance(text, str) or not text.strip():
            raise web.HTTPError(400, "the prompt is empty: write what the agent should do")
        if len(text) > MAX_PROMPT_CHARS:
            raise web.HTTPError(413, f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
        codes = self.share.codes
        if not codes.feed_open(code.session_id):
            self.set_status(409)
            self.finish({"result": "no notebook takes prompts for this session right now: ask "
                         "its owner to run %share in the notebook"})  # fmt: skip
            return
        ahead = codes.queued_prompts(code.session_id)
        prompt_id = codes.post_prompt(code.session_id, text.strip(), self.who(), "share page")
        self.set_status(202)
        self.finish({"result": "queued", "prompt_id": prompt_id, "ahead": ahead})


class LiveSocket(websocket.WebSocketHandler, ShareHandler):
    """Events from a sequence number on, then live. Only the server speaks; what a client
    sends is ignored (answers go through the XSRF-checked POST)."""

    watcher_id = ""

    def check_origin(self, origin: str) -> bool:
        return bool(origin) and self.same_origin(origin)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Origin") is None:
            self.set_status(403)
            self.finish("403: a WebSocket needs an Origin\n")
            return
        self.require()
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        assert self.code is not None
        try:
            since = max(0, int(self.get_query_argument("since", "0")))
        except ValueError:
            since = 0
        self.watcher_id = secrets.token_hex(8)
        self.share.codes.watching(self.watcher_id, self.code.session_id, self.code.role,
                                  self.who())  # fmt: skip
        self.share.join(self, since)

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.share.leave(self)
        if self.watcher_id:
            self.share.codes.left(self.watcher_id)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message))

    def send_raw(self, frame: str) -> None:
        try:
            self.write_message(frame)
        except websocket.WebSocketClosedError:
            self.share.leave(self)


def log_request(handler: web.RequestHandler) -> None:
    """The access log without query strings: codes never reach a log."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING
    log.log(level, "%d %s %s (%s) %.1fms", status, handler.request.method, handler.request.path,
            handler.request.remote_ip, 1000.0 * handler.request.request_time())  # fmt: skip


async def serve_forever(server: ShareServer) -> None:
    server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
