"""The share server: a session's live page for whoever holds a link, on port 6767.

One tornado application, run in the jupyter server's own loop (`jupyter_ext.share.app`) or
standalone (``python -m jupyter_ext.share``). It reads the session store; it acts on nothing
but what a co-driver sends: approval answers and prompts, which it writes to the store for the
kernel to take (`codes`, `omnikernel.kernel.codrive`).

What authorises each request (checked before any handler code runs, `ShareHandler.prepare`):

- Every request: ``Host`` must name this server (its address and port, loopback names, or the
  configured host names): a rebound DNS name is refused with 403.
- ``GET /join?code=...`` shows a confirmation page (or says the link was revoked or expired);
  it spends nothing. Its script POSTs the code (JSON, with this server's ``Origin``) and gets a
  fresh grant (256 bits, stored hashed) back, which it keeps in the page origin's own storage.
  Wrong codes count per address and in total (`limits`): past either cap, 429 without a lookup.
- The grant is never a cookie. Browsers send a cookie to every port of a host name, so a
  cookie grant could be read, replayed or replaced by any other server on the machine (a
  session swap: the victim approving in the attacker's session). Origin-scoped storage is
  per scheme, host *and* port: the page sends the grant as ``Authorization: Bearer`` on
  `/api/*` and as a WebSocket subprotocol (``omk-grant.<grant>``) on `/ws`; nothing is ambient,
  so no other page can make the browser send it.
- Every POST carries this server's ``Origin`` and a JSON body, read only after the grant is
  checked, from a stream capped at the route's size; its fields are checked strictly (`bodies`).
  A read-only grant may only read.
- The WebSocket's ``Origin`` must be this server (a missing one is refused too). Each open
  socket re-checks its link on every tick; revoking a link closes its sockets.
- ``/live`` and ``/static/*`` are the same for everyone and hold no session data.
- Codes and grants are never logged: every log line this server writes names the path without
  its query string, and never a header.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import sqlite3
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tornado import httpserver, ioloop, web, websocket
from tornado.netutil import bind_sockets

from jupyter_ext.share import bodies
from jupyter_ext.share.feed import Feed, FrameWriter
from jupyter_ext.share.limits import CatchUps, WrongCodes
from jupyter_ext.share.page import CONFIRM_PAGE, LIVE_PAGE, STATIC, UNUSABLE_PAGE
from jupyter_ext.share.render import OwnerPaths
from omnikernel.events import EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import (
    CO_DRIVE,
    MAX_PROMPT_CHARS,
    OWNER_CODE_ID,
    ROLE_NAMES,
    Code,
    ShareCodes,
)

log = logging.getLogger("omnikernel.share")

#: The WebSocket subprotocol the page speaks, and the prefix of the one that carries its grant.
WS_PROTOCOL = "omk-share"
WS_GRANT_PREFIX = "omk-grant."
TICK_S = 0.05
#: How often the store is asked whether anything was committed, while anyone follows a feed
#: (a ``PRAGMA data_version``: microseconds); the feeds read only when something was.
WATCH_S = 0.01
#: How often links, answers and prompts that can never be used again leave the store.
PURGE_EVERY_S = 3600.0
#: A session nobody follows keeps its rendered feed this long (a reconnect reuses it).
FEED_KEEP_S = 60.0
#: Who may answer the agent's approvals: the notebook's owner only (in the cell), or co-drivers
#: on the share page too (`c.OmnikernelShare.approvers`).
APPROVERS = ("owner", "co-drivers")


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class ShareServer:
    """Serve share links of the sessions in one store. `start` in a running loop (or before
    the jupyter server's loop starts); `stop` closes every socket and the listener."""

    def __init__(
        self,
        store_path: Path | str | None = None,
        address: str = "127.0.0.1",
        port: int = 6767,
        hostnames: Iterable[str] = (),
        certfile: str = "",
        keyfile: str = "",
        clock: Any = time.time,
        approvers: str = "co-drivers",
        anonymous_links: bool = True,
    ):
        if approvers not in APPROVERS:
            raise ValueError(f"approvers must be one of {', '.join(APPROVERS)}, not {approvers!r}")
        self.approvers = approvers
        self.anonymous_links = anonymous_links
        self.store = SessionStore(store_path)
        self.codes = ShareCodes(self.store.path, clock=clock)
        self.address = address
        self.port = port
        self.hostnames = tuple(hostnames)
        self.certfile, self.keyfile = certfile, keyfile
        self.feeds: dict[str, Feed] = {}
        self.wrong_codes = WrongCodes()
        self.catch_ups = CatchUps()
        self._server: httpserver.HTTPServer | None = None
        self._ticker: ioloop.PeriodicCallback | None = None
        self._purger: ioloop.PeriodicCallback | None = None
        self._watcher: ioloop.PeriodicCallback | None = None
        self._changes: sqlite3.Connection | None = None
        self._data_version = -1
        #: Live pages opened and closed since the last tick, written to the store in one go.
        self._joined: dict[str, tuple[str, str, str]] = {}
        self._left: set[str] = set()

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    @property
    def url(self) -> str:
        host = (
            self.address
            if self.address not in ("0.0.0.0", "::", "")
            else (self.hostnames[0] if self.hostnames else "127.0.0.1")
        )
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
                (r"/static/([a-z]+\.(?:js|css))", StaticHandler),
                (r"/api/grant", GrantHandler),
                (r"/api/answer", AnswerHandler),
                (r"/api/prompt", PromptHandler),
                (r"/ws", LiveSocket),
            ],
            share=self,
            log_function=log_request,
            websocket_ping_interval=20,
        )

    def start(self) -> None:
        """Listen (the port is taken now, so a clash is reported at once) and start ticking."""
        if not is_loopback(self.address):
            log.warning(
                "omnikernel share server listens on %s: anyone on that network who has "
                "a link can open it%s",
                self.address,
                ""
                if self.certfile
                else ", and without TLS they can read it on the wire (set a certificate)",
            )
        sockets = bind_sockets(self.port, self.address)
        self.port = sockets[0].getsockname()[1]
        context = None
        if self.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certfile, self.keyfile or None)
        # No request may make the server buffer more than the largest route takes; each route
        # lowers this to its own size once the request showed what authorises it.
        self._server = httpserver.HTTPServer(
            self.app(), ssl_options=context, xheaders=False, max_body_size=bodies.MAX_BODY_BYTES
        )
        self._server.add_sockets(sockets)
        self.start_ticking()
        self.codes.server_started(self.url)
        log.info("omnikernel share server at %s", self.url)

    def start_ticking(self) -> None:
        """Follow the feeds and purge the store, without a listener of its own (the share page
        under a JupyterHub user's server uses this; `start` listens too)."""
        self._ticker = ioloop.PeriodicCallback(self.tick, TICK_S * 1000)
        self._ticker.start()
        self._purger = ioloop.PeriodicCallback(self.purge, PURGE_EVERY_S * 1000)
        self._purger.start()
        self.purge()

    def may_answer(self, code: Code) -> bool:
        """Whether a grant lets its holder approve or deny what the agent asks: the owner
        always; a co-driver when `approvers` says co-drivers."""
        if code.code_id == OWNER_CODE_ID:
            return True
        return code.role == CO_DRIVE and self.approvers == "co-drivers"

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self._purger is not None:
            self._purger.stop()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._changes is not None:
            self._changes.close()
            self._changes = None
        self._ticker = None
        self.flush_watchers()
        for feed in list(self.feeds.values()):
            for sock in list(feed.sockets):
                sock.close(1001, "the share server is stopping")
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
            self.codes.server_stopped(self.url)

    # -- the live feed --------------------------------------------------------------------------

    def feed(self, session_id: str) -> Feed:
        feed = self.feeds.get(session_id)
        if feed is None:
            row = self.store.session(session_id)
            paths = OwnerPaths.of(str(row["notebook"]) if row else "")
            feed = self.feeds[session_id] = Feed(session_id, self.store, paths)
        return feed

    def leave(self, sock: LiveSocket) -> None:
        if sock.code is not None and (feed := self.feeds.get(sock.code.session_id)) is not None:
            feed.unfollow(sock)

    def watching(self, watcher_id: str, session_id: str, role: str, who: str) -> None:
        """A live page opened (``%share`` lists it): written to the store on the next tick."""
        self._joined[watcher_id] = (session_id, role, who)

    def left(self, watcher_id: str) -> None:
        """A live page closed: off the store's list on the next tick (at once once stopped)."""
        if self._joined.pop(watcher_id, None) is None:
            self._left.add(watcher_id)
        if self._ticker is None:
            self.flush_watchers()

    def flush_watchers(self) -> None:
        if self._joined or self._left:
            joined, left = self._joined, self._left
            self._joined, self._left = {}, set()
            self.codes.watchers_changed([(w, *page) for w, page in joined.items()], left)

    def tick(self) -> None:
        """New events to every viewer; sockets of revoked or expired links closed; feeds
        nobody followed for a while let go; the store watched closely while anyone follows;
        the live pages opened and closed meanwhile written to the store, in one commit."""
        self.flush_watchers()
        open_codes = {link for f in self.feeds.values() for link in f.by_link}
        ended = self.codes.revoked_among(open_codes)
        followed = False
        for session_id, feed in list(self.feeds.items()):
            for link in ended & feed.by_link.keys():
                for sock in list(feed.by_link[link]):
                    feed.unfollow(sock)
                    sock.close(4403, "this share link was revoked or has expired")
            if feed.sockets or feed.catching_up:
                feed.poke()
                followed = True
            elif feed.unused_for() > FEED_KEEP_S:
                del self.feeds[session_id]
        if followed and self._watcher is None:
            self._watcher = ioloop.PeriodicCallback(self.watch, WATCH_S * 1000)
            self._watcher.start()
        elif not followed and self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def watch(self) -> None:
        """Between ticks: the followed feeds read as soon as the store had a commit (from any
        other connection: the kernel's), so an event reaches viewers within `WATCH_S`."""
        if self._changes is None:
            self._changes = sqlite3.connect(self.store.path, check_same_thread=False)
        (version,) = self._changes.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return
        self._data_version = version
        for feed in self.feeds.values():
            if feed.sockets:
                feed.poke()

    def purge(self) -> None:
        if gone := self.codes.purge():
            log.info("share: purged %d expired link, answer and prompt rows", gone)


class JsonErrors(web.RequestHandler):
    """Errors as the page reads them: JSON, the refusal's own message as ``result`` (the
    standalone server's handlers and the hub's page share it)."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        if "exc_info" in kwargs and isinstance(kwargs["exc_info"][1], web.HTTPError):
            reason = kwargs["exc_info"][1].log_message or reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"result": reason, "status": status_code}))


class ShareHandler(JsonErrors):
    """Host and Origin checks first; the grant (from ``Authorization``) for what needs one."""

    code: Code | None = None

    @property
    def share(self) -> ShareServer:
        return self.settings["share"]

    def prepare(self) -> None:
        if self.request.host not in self.share.allowed_hosts():
            raise web.HTTPError(
                403,
                "unknown Host (DNS rebinding?): open the link as the "
                "owner gave it, or ask them to add this name to the share "
                "server's hostnames",
            )
        if self.request.method == "POST":
            if not self.same_origin(self.request.headers.get("Origin", "")):
                raise web.HTTPError(403, "a POST must come from the share page itself (Origin)")
            kind = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise web.HTTPError(415, "send the body as application/json")
        self.code = self.share.codes.granted(self.grant_token())

    def grant_token(self) -> str | None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def same_origin(self, origin: str) -> bool:
        parts = urlsplit(origin)
        return parts.scheme == self.share.scheme and parts.netloc == self.request.host

    def require(self, role: str | None = None) -> Code:
        if self.code is None:
            raise web.HTTPError(
                403,
                "this share link was revoked or has expired (or was never "
                "opened here): open your link again",
            )
        if role is not None and self.code.role != role:
            raise web.HTTPError(403, "this is a read-only link")
        return self.code

    def who(self) -> str:
        role = ROLE_NAMES[self.code.role] if self.code else "viewer"
        return f"{role} at {self.request.remote_ip}"

    def set_default_headers(self) -> None:
        # Scripts only from this server's files: an injection bug cannot run script. Inline
        # style stays (markdown-it's table alignment); it cannot fetch anything (img-src).
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    # -- logging: the path, never the query string (codes) or a header (grants) ----------------

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            log.warning(
                "%d %s: %s", value.status_code, self._request_summary(), value.log_message or ""
            )
        else:  # tornado's own would print the whole request, headers (the grant) included
            log.error(
                "uncaught exception in %s", self._request_summary(), exc_info=(typ, value, tb)
            )


class BodyHandler(ShareHandler):
    """A POST whose body is read only once `prepare` let it through (the grant of `role`, when
    the route needs one), up to `limit` bytes."""

    limit = 1024
    role: str | None = None

    def prepare(self) -> None:
        super().prepare()
        if self.role is not None:
            self.require(self.role)
        self.request.connection.set_max_body_size(self.limit)  # type: ignore[union-attr]
        self._chunks: list[bytes] = []
        self._size = 0

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.limit:
            raise web.HTTPError(413, f"the body is larger than {self.limit} bytes")
        self._chunks.append(chunk)

    def body(self) -> bytes:
        return b"".join(self._chunks)


@web.stream_request_body
class JoinHandler(BodyHandler):
    limit = bodies.JOIN_BODY_BYTES

    def unusable(self, status: int, why: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(UNUSABLE_PAGE.replace("{{why}}", why))

    def prepare(self) -> None:
        super().prepare()
        if not self.share.anonymous_links:
            raise web.HTTPError(
                403,
                "links are off on this server (c.OmnikernelShare.anonymous_links): ask the "
                "notebook's owner to share the session with you by name",
            )

    def get(self) -> None:
        client = self.request.remote_ip or "?"
        if (refusal := self.share.wrong_codes.refusal(client)) is not None:
            self.unusable(429, refusal.capitalize() + ".")
            return
        code = self.share.codes.lookup(self.get_query_argument("code", "")[:200])
        if code is None:
            self.share.wrong_codes.failed(client)
            log.warning("share: a wrong, revoked or expired link opened from %s", client)
            self.unusable(
                403,
                "This link was revoked or has expired (or it is not a share "
                "link). Ask the notebook's owner for a new one.",
            )
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(CONFIRM_PAGE.replace("{{role}}", ROLE_NAMES[code.role]))

    def post(self) -> None:
        client = self.request.remote_ip or "?"
        if (refusal := self.share.wrong_codes.refusal(client)) is not None:
            raise web.HTTPError(429, refusal)
        try:
            given = bodies.join(self.body())
        except bodies.BodyError as exc:
            raise web.HTTPError(400, str(exc)) from None
        code = self.share.codes.lookup(given)
        if code is None:
            self.share.wrong_codes.failed(client)
            log.warning("share: a wrong, revoked or expired code from %s", client)
            raise web.HTTPError(
                403,
                "this link was revoked or has expired (or it is not a "
                "share link): ask the notebook's owner for a new one",
            )
        self.finish(
            {
                "grant": self.share.codes.grant(code),
                "session": code.session_id,
                "role": code.role,
                "expires": code.expires,
            }
        )


class LiveHandler(ShareHandler):
    """The page's shell: the same for everyone; its script brings the session with its grant."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(LIVE_PAGE)


class StaticHandler(ShareHandler):
    """The page's script and style (files, so the CSP needs no inline script)."""

    def get(self, name: str) -> None:
        if name not in STATIC:
            raise web.HTTPError(404, "no such file")
        kind, text = STATIC[name]
        self.set_header("Content-Type", kind)
        self.finish(text)


class GrantHandler(ShareHandler):
    """What the page's grant opens: its session and role, or 403 once it cannot be used."""

    def get(self) -> None:
        code = self.require()
        row = self.share.store.session(code.session_id)
        notebook = Path(str(row["notebook"])).name if row else ""
        self.finish(
            {
                "session": code.session_id,
                "role": code.role,
                "role_name": ROLE_NAMES[code.role],
                "notebook": notebook,
                "expires": code.expires,
                "may_answer": self.share.may_answer(code),
            }
        )


@web.stream_request_body
class AnswerHandler(BodyHandler):
    limit = bodies.ANSWER_BODY_BYTES
    role = CO_DRIVE

    def post(self) -> None:
        code = self.require(CO_DRIVE)
        try:
            request_id, allow = bodies.answer(self.body())
        except bodies.BodyError as exc:
            raise web.HTTPError(400, str(exc)) from None
        status, result = give_answer(self.share, code, request_id, allow, self.who())
        self.set_status(status)
        self.finish({"result": result})


@web.stream_request_body
class PromptHandler(BodyHandler):
    """A co-driver's prompt, queued for the kernel that shows the session's feed."""

    limit = bodies.PROMPT_BODY_BYTES
    role = CO_DRIVE

    def post(self) -> None:
        code = self.require(CO_DRIVE)
        try:
            text = bodies.prompt(self.body())
        except bodies.BodyError as exc:
            raise web.HTTPError(400, str(exc)) from None
        status, result = queue_prompt(self.share, code, text, self.who())
        self.set_status(status)
        self.finish(result)


class LiveSocket(FrameWriter, ShareHandler):
    """Events from a sequence number on, then live. Only the server speaks; what a client
    sends is ignored (answers go through the POSTs)."""

    watcher_id = ""
    following = False

    def grant_token(self) -> str | None:
        """A browser's WebSocket cannot send ``Authorization``: the page offers its grant as a
        second subprotocol, which, like the header, no other origin can make it send."""
        offered = self.request.headers.get("Sec-WebSocket-Protocol", "")
        for protocol in offered.split(","):
            if (protocol := protocol.strip()).startswith(WS_GRANT_PREFIX):
                return protocol[len(WS_GRANT_PREFIX) :]
        return super().grant_token()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return WS_PROTOCOL if WS_PROTOCOL in subprotocols else None

    def check_origin(self, origin: str) -> bool:
        return bool(origin) and self.same_origin(origin)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.request.headers.get("Origin") is None:
            raise web.HTTPError(403, "a WebSocket needs an Origin")
        self.require()
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        """Send the history after ``since`` (bounded per link and in all, `limits`), then
        follow the feed live."""
        assert self.code is not None
        try:
            since = max(0, int(self.get_query_argument("since", "0")))
        except ValueError:
            since = 0
        share, link = self.share, self.code.code_id
        if not share.catch_ups.may_start(link):
            self.close(4429, "this link is already catching up elsewhere; retrying shortly")
            return
        self.watcher_id = secrets.token_hex(8)
        share.watching(self.watcher_id, self.code.session_id, self.code.role, self.who())
        feed = share.feed(self.code.session_id)
        share.catch_ups.started(link)
        feed.catching_up += 1  # keeps the feed (and its reads) alive while this one waits
        try:
            async with share.catch_ups.slots:
                await feed.loaded()  # what came meanwhile also went to those already live
                await feed.catch_up(since, self.write_frame)
        except websocket.WebSocketClosedError:
            return
        finally:
            feed.catching_up -= 1
            share.catch_ups.ended(link)
        if self.ws_connection is not None and not self.ws_connection.is_closing():
            self.open_for_frames()
            feed.follow(self)  # same loop step as the last frame: nothing missed
            self.following = True

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.share.leave(self)
        if self.watcher_id:
            self.share.left(self.watcher_id)


def give_answer(
    share: ShareServer, code: Code, request_id: str, allow: bool, who: str
) -> tuple[int, str]:
    """A co-driver's answer to an approval, for the kernel to take: (status, what to say)."""
    if not share.may_answer(code):
        return 403, "only the notebook's owner answers approvals in this session"
    asked = decided = None
    for event in share.store.events(
        code.session_id, kinds=(EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION)
    ):
        if event.data.get("request_id") == request_id:
            if event.kind == EventKind.APPROVAL_REQUEST:
                asked = event
            else:
                decided = event
    if asked is None:
        raise web.HTTPError(404, "no such approval in this session")
    if decided is not None:
        return 409, f"too late: {decided.data.get('reason', 'already decided')}"
    if (given := share.codes.given_answer(code.session_id, request_id)) is not None:
        verb = "approved" if given[0] else "denied"
        return 409, f"too late: already {verb} by {given[1]} ({given[2]})"
    share.codes.post_answer(code.session_id, request_id, allow, who, "share page")
    return 202, "sent"


def queue_prompt(share: ShareServer, code: Code, text: str, who: str) -> tuple[int, dict[str, Any]]:
    """A co-driver's prompt, queued for the kernel that shows the feed: (status, body)."""
    if not text.strip():
        raise web.HTTPError(400, "the prompt is empty: write what the agent should do")
    if len(text) > MAX_PROMPT_CHARS:
        raise web.HTTPError(413, f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    codes = share.codes
    if not codes.feed_open(code.session_id):
        return 409, {
            "result": "no notebook takes prompts for this session right now: ask "
            "its owner to run %share in the notebook"
        }
    ahead = codes.queued_prompts(code.session_id)
    prompt_id = codes.post_prompt(code.session_id, text.strip(), who, "share page")
    return 202, {"result": "queued", "prompt_id": prompt_id, "ahead": ahead}


def log_request(handler: web.RequestHandler) -> None:
    """The access log without query strings: codes never reach a log."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING
    log.log(
        level,
        "%d %s %s (%s) %.1fms",
        status,
        handler.request.method,
        handler.request.path,
        handler.request.remote_ip,
        1000.0 * handler.request.request_time(),
    )


async def serve_forever(server: ShareServer) -> None:
    server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
