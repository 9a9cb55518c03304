"""A tornado HTTP server on loopback that can run on its own thread and event loop.

The model gateway and the fake model both need this: an agent's stream must keep flowing even
while the kernel's own loop is busy (a long Python cell), so each gets a loop of its own.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from typing import Self

from tornado import httpserver, web
from tornado.netutil import bind_sockets


class LoopbackServer(abc.ABC):
    thread_name = "omnikernel-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
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

    async def start(self) -> None:
        """Listen on the running loop (port 0: any free port, then `port` says which)."""
        sockets = bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        self._server = httpserver.HTTPServer(self.app(), idle_connection_timeout=600)
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
