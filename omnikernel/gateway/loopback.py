"""A tornado HTTP server on loopback that can run on its own thread and event loop.

The model gateway and the fake model both need this: an agent's stream must keep flowing even
while the kernel's own loop is busy (a long Python cell), so each gets a loop of its own.

Loopback is not private (every local process, other users, a browser's pages reach it), so a
server meant for one user's agents serves a unix socket instead where it can (the gateway does:
see `omnikernel.gateway.server`). Whichever way it is reached, each server says who may use it
(`refusal`, see `omnikernel.gateway.guard`) and its handlers derive from `GuardedHandler`, which refuses
everything else with 401 before any handler code runs, in one log line that never holds a
credential.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import socket
import threading
from collections.abc import Mapping
from typing import Self

from tornado import httpserver, web
from tornado.log import access_log
from tornado.netutil import bind_sockets

log = logging.getLogger(__name__)


class LoopbackServer(abc.ABC):
    thread_name = "omnikernel-server"

    def __init__(self, host: str = "127.0.0.1", port: int | None = 0):
        self.host = host
        #: The TCP port served (0: any free one, chosen at `start`; None: none).
        self.port = port
        self._server: httpserver.HTTPServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def app(self) -> web.Application:
        """The tornado application to serve."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """The ``Host`` header of a request to the address and port it serves."""
        return f"{self.host}:{self.port}"

    @property
    def authorities(self) -> tuple[str, ...]:
        """The only ``Host`` headers this server accepts."""
        return (self.authority,)

    @abc.abstractmethod
    def refusal(
        self, method: str, headers: Mapping[str, str], path_args: tuple[str, ...]
    ) -> str | None:
        """Why this request is refused (see `omnikernel.gateway.guard.refusal`), or None to serve it."""

    async def start(self) -> None:
        """Listen on the running loop (port 0: any free port, then `port` says which)."""
        self.serve(self.bind_tcp())

    def bind_tcp(self) -> list[socket.socket]:
        """Bind the TCP port (any free one if `port` is 0 or None; `port` then says which)."""
        sockets = bind_sockets(self.port or 0, self.host)
        self.port = sockets[0].getsockname()[1]
        return sockets

    def serve(self, sockets: list[socket.socket]) -> None:
        """Serve `sockets` as well, from the running loop (the server is made at the first)."""
        if self._server is None:
            app = self.app()
            app.settings["log_function"] = log_request
            self._server = httpserver.HTTPServer(app, idle_connection_timeout=600)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    def start_in_thread(self) -> Self:
        """Serve from a thread with its own event loop; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = self._loop = None

    def __enter__(self) -> Self:
        return self if self._thread else self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class GuardedHandler(web.RequestHandler):
    """Every request passes its server's `refusal` before the handler sees it."""

    refused = False

    def guarded_by(self) -> LoopbackServer:
        """The server whose rules apply (set by each handler's ``initialize``)."""
        raise NotImplementedError

    def prepare(self) -> None:
        request = self.request
        reason = self.guarded_by().refusal(
            request.method or "", request.headers, tuple(a for a in self.path_args if a)
        )
        if reason is None:
            return
        self.refused = True
        # The one log line of a refusal: what was asked and why not, never a header's value.
        # A HEAD carries no body and acts on nothing (Claude Code sends one, key-less, to warm
        # its connection): not worth a warning.
        level = logging.INFO if request.method == "HEAD" else logging.WARNING
        log.log(
            level,
            "%s refused %s %s from %s: %s",
            type(self.guarded_by()).__name__,
            request.method,
            request.path[:200],
            request.remote_ip,
            reason,
        )
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Bearer realm="omnikernel"')
        self.set_header("Content-Type", "application/json")
        message = f"omnikernel refused this request: {reason}."
        self.finish(
            json.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": "authentication_error",
                        "message": message,
                        "code": "refused",
                    },
                }
            )
        )


def log_request(handler: web.RequestHandler) -> None:
    """Tornado's access log, at debug level (raise `tornado.access` to see it): these servers
    run inside the kernel, whose stderr is the user's, and a refusal or a budget stop is
    reported to the user their own way. Refusals `GuardedHandler` logged already are left out."""
    if getattr(handler, "refused", False):
        return
    access_log.debug(
        "%d %s %.2fms",
        handler.get_status(),
        handler._request_summary(),
        1000.0 * handler.request.request_time(),
    )
