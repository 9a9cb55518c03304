"""The model gateway: every harness's model traffic passes here, one per kernel.

Why one place: spend is measured the same way for every harness (from the wire, priced with
the shipped table), a budget can stop a turn mid-stream, the real API key never reaches an
agent (the gateway swaps in the real credential upstream), and a notebook's traffic can be
recorded and replayed.

Each harness has its own path prefix, ``/h/<harness>``, so spend is attributed to it, and its
own secret (`issue_secret`), which it sends as its API key: since the gateway spends the user's
money, it serves only requests carrying the secret issued for that path, and nothing from a
browser (see `omnikernel.gateway.guard`). The kernel sets the current session and cell with
`set_context`. Streams are forwarded chunk by
chunk as they arrive, never buffered. The gateway runs on its own thread and event loop so a
busy kernel never stalls an agent's stream.

Who can reach it at all: a secret can leak (an agent prints its environment, a shared session
shows it), and a secret alone must not let any local process spend the user's money. So the
gateway serves a unix socket, mode 0600 in a fresh 0700 directory of the user's run dir
(`omnikernel.sandbox.rundir`), and no TCP port: only the user's own processes can open it, and
of those only the sandboxes' bridges are told where it is. A sandboxed agent still gets an
``http://127.0.0.1:PORT`` URL (the CLIs speak HTTP over TCP): PORT is `inside_port`, where the
bridge's relay listens inside the sandbox's own network namespace, and the bridge's host side
forwards to the socket (`omnikernel.sandbox.bridge`). A CLI started with ``%sandbox off`` has no
bridge, so for it (and for tests and benchmarks that call the gateway from the host) the gateway
opens a loopback TCP port as well, on request (`open_tcp`), never otherwise.
"""

from __future__ import annotations

import asyncio
import threading

from tornado import web
from tornado.netutil import bind_unix_socket

from omnikernel.gateway.calls import GeminiCallHandler, ModelCallHandler
from omnikernel.gateway.handlers import NotFoundHandler, PassThroughHandler, PingHandler
from omnikernel.gateway.state import GatewayState
from omnikernel.sandbox.rundir import RunDir

SOCKET_NAME = "gateway.sock"


class Gateway(GatewayState):
    """See the module docstring."""

    # -- where it listens ----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the unix socket (and the TCP port if `tcp`), on the running loop.

        The socket's directory is a run dir made fresh (``mkdir``, which never follows a link
        planted at its path) with mode 0700 under the user's own 0700 run root; the socket is
        0600. A kernel killed before `stop` leaves it to the next kernel's sweep."""
        run = RunDir.create()
        try:
            path = run.path / SOCKET_NAME
            self.serve([bind_unix_socket(str(path), mode=0o600)])
        except BaseException:
            run.remove()
            raise
        self._run, self.socket_path = run, path
        if self.tcp:
            self.serve(self.bind_tcp())

    async def stop(self) -> None:
        await super().stop()
        await self.client.close()
        if self._run is not None:
            self._run.remove()  # the socket with it
            self._run = self.socket_path = None

    def open_tcp(self) -> int:
        """Listen on a loopback TCP port as well, now (once: later calls return the same port).

        For clients outside every sandbox only: a CLI started with ``%sandbox off`` (it has no
        bridge to the socket), and tests and benchmarks on the host. Every local process of
        every user can connect to that port, so there only the secret and the guard stand
        between a leaked secret and the user's money; a kernel whose agents all run sandboxed
        never opens it. It stays open until the gateway stops (an unsandboxed CLI of the session
        may still be using it when another goes back into a sandbox)."""
        if self._server is None:
            raise RuntimeError("the gateway is not running")
        if self.port is None:
            if self._thread is not None and threading.current_thread() is not self._thread:
                assert self._loop is not None  # the server's loop: it accepts there
                asyncio.run_coroutine_threadsafe(self._open_tcp(), self._loop).result(30)
            else:
                self.serve(self.bind_tcp())
        assert self.port is not None
        return self.port

    async def _open_tcp(self) -> None:
        if self.port is None:
            self.serve(self.bind_tcp())

    @property
    def authorities(self) -> tuple[str, ...]:
        """The ``Host`` an agent sends: the sandbox relay's port, or the TCP port once open."""
        inside = f"127.0.0.1:{self.inside_port}"
        return (inside,) if self.port is None else (inside, f"127.0.0.1:{self.port}")

    # -- configuration from the kernel ---------------------------------------------------------

    def base_url_for(self, harness: str, wire: str, *, tcp: bool = False) -> str:
        """The base URL a harness is given instead of its vendor's: inside its sandbox (the
        relay's port, bridged to the socket), or with `tcp`, outside any sandbox (the TCP port,
        opened now if it is not yet: see `open_tcp`)."""
        port = self.open_tcp() if tcp else self.inside_port
        root = f"http://127.0.0.1:{port}/h/{harness}"
        return root + "/v1" if wire == "openai" else root  # Gemini's paths name their version

    def app(self) -> web.Application:
        opts = {"gateway": self}
        api = r"/h/([A-Za-z0-9_.-]+)/v1/(messages|responses|chat/completions)"
        gemini = r"/h/([A-Za-z0-9_.-]+)/(v1beta|v1|v1alpha)/models/([A-Za-z0-9_.-]+):(\w+)"
        return web.Application(
            [
                (gemini, GeminiCallHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/v1/messages/count_tokens", PassThroughHandler, opts),
                (api, ModelCallHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/v1/(models.*)", PassThroughHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/?", PingHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/.*", NotFoundHandler, opts),
                (r"/.*", NotFoundHandler, opts),  # never served: no secret is issued for it
            ]
        )
