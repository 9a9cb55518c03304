"""The sandbox's one way to the network: an egress proxy that asks about every new host.

The sandbox has no network; the kernel runs this small HTTP proxy on the host for each
sandboxed agent, and the agent gets ``HTTPS_PROXY``/``HTTP_PROXY`` pointing at
``127.0.0.1:PORT`` inside the sandbox, where the bridge's relay forwards to it. The proxy
listens on a unix socket in the bridge's private directory, never on a TCP port: only the
sandbox's relay reaches it, so no other local process, user or web page can use it to reach
hosts from this machine. It tunnels ``CONNECT host:port`` and forwards absolute-form HTTP
requests, each only after a decision:

- with `ask` (the session's network ask: the policy, else a person), every connection is put
  to it, saying whether the proxy's `rules` allow the host (``host``, ``host:port``,
  ``*.domain`` or a preset such as ``@pypi``, see `omnikernel.policy.hosts`); an allowed host
  goes at once unless a ``deny-host`` rule refuses it, any other waits for the answer, the
  connection held meanwhile, within the client's own timeout;
- without `ask`, `rules` alone decide and everything else is refused.

A refusal is a 403 whose reason phrase says why, since that line is what pip, npm, git and curl
print. A target that is no host name or address is refused before anyone is asked. The rules
and the decision live in the kernel, not in the sandbox, so the agent cannot change them. The
sandbox layer knows nothing of sessions or policies: `ask` is an async callback.

A CONNECT to a brokered host (``%sandbox broker``) is not tunnelled but handed to the `broker`,
which answers its TLS with the session CA and adds the user's credential (`broker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from omnikernel.policy import hosts
from omnikernel.sandbox.bridge import pipe
from omnikernel.sandbox.upstream import DIRECT, EgressRoutes, LocalAddressError

if TYPE_CHECKING:  # made by `launch` only for a brokered host (its imports are heavy)
    from omnikernel.sandbox.broker import Broker

DEFAULT_PORTS = hosts.DEFAULT_PORTS
#: Asked about every connection, with (host, port, whether the proxy's `rules` allow it):
#: None lets it through, else the reason it is refused (shown to the agent's tool).
NetworkAsk = Callable[[str, int, bool], Awaitable[str | None]]
#: What a host may be: a DNS name or an IPv4/IPv6 address. Anything else (it would reach the
#: card, the policy and the cell) is refused before it is asked about.
HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})|[0-9A-Fa-f:.]{2,45}")
#: The proxy's port inside the sandbox (its own network namespace), unless the gateway has it.
INSIDE_PORT = 3128


def allowed(rules: tuple[str, ...], host: str, port: int) -> bool:
    return hosts.allowed(rules, host, port)


def inside_port(taken: tuple[int, ...]) -> int:
    """A port for the proxy inside the sandbox that no other bridged port uses."""
    port = INSIDE_PORT
    while port in taken:
        port += 1
    return port


class EgressProxy:
    """See the module docstring. Serves on the unix socket `path` once started."""

    def __init__(
        self,
        rules: tuple[str, ...],
        path: Path,
        routes: EgressRoutes = DIRECT,
        ask: NetworkAsk | None = None,
        broker: Broker | None = None,
    ):
        self.rules = rules
        self.path = path
        #: Decides about every host `rules` do not allow (see the module docstring).
        self.ask = ask
        #: Takes over CONNECTs to brokered hosts (`omnikernel.sandbox.broker`).
        self.broker = broker
        #: How upstream connections are opened (``egress_resolve``, ``egress_ca``).
        self.routes = routes
        self.denied: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only if empty (else the bridge removes it)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, _, rest = head.partition(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ", 2)
        except ValueError:
            await self._refuse(writer, 400, "bad request line")
            return
        if method.upper() == "CONNECT":
            host, _, port_text = target.rpartition(":")
            port = int(port_text) if port_text.isdigit() else 443
            upstream_head = b""
        else:
            url = urlsplit(target)
            if not url.hostname:
                await self._refuse(writer, 400, "only proxy requests (absolute URLs) are served")
                return
            host, port = url.hostname, url.port or 80
            path = url.path or "/"
            path += f"?{url.query}" if url.query else ""
            upstream_head = f"{method} {path} {version}\r\n".encode("latin-1") + rest
        host = host.strip("[]")
        if not HOST_NAME.fullmatch(host) or not 0 < port < 65536:
            await self._refuse(writer, 400, "not a host name or address")
            return
        refused = await self._decide(host, port)
        if refused is not None:
            self.denied.append(f"{host}:{port}")
            await self._refuse(writer, 403, refused)
            return
        if upstream_head:
            await self._forward(host, port, upstream_head, reader, writer)
        else:
            await self._tunnel(host, port, reader, writer)

    async def _decide(self, host: str, port: int) -> str | None:
        """None if the connection may go, else why not. With `ask`, it decides every
        connection, told whether `rules` allow it (a policy's ``deny-host`` wins over an
        allowed host); without, `rules` alone."""
        allowed_here = allowed(self.rules, host, port)
        if self.ask is None:
            if allowed_here:
                return None
            return (
                f"{host}:{port} is not allowed from the sandbox; allow it with "
                f"%sandbox allow {host}:{port}"
            )
        try:
            return await self.ask(host, port, allowed_here)
        except Exception as exc:  # fail closed
            return f"{host}:{port} is refused: the decision failed ({exc!r})"

    async def _tunnel(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A CONNECT the policy allowed: answer 200 and carry the client's bytes to `host`:`port`
        untouched (TLS stays end to end between the agent's client and the server). A
        brokered host's CONNECT goes to the broker instead, which answers its TLS itself."""
        if self.broker is not None and self.broker.brokers(host, port):
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self.broker.serve(host, port, reader, writer)
            return
        try:
            up_reader, up_writer = await self.routes.open_upstream(host, port)
        except LocalAddressError as exc:
            await self._refuse(writer, 403, str(exc))
            return
        except OSError as exc:
            await self._refuse(writer, 502, f"cannot reach {host}:{port}: {exc}")
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _forward(
        self,
        host: str,
        port: int,
        head: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """A plain-HTTP proxy request the policy allowed: sent on in origin form."""
        try:
            up_reader, up_writer = await self.routes.open_upstream(host, port)
        except LocalAddressError as exc:
            await self._refuse(writer, 403, str(exc))
            return
        except OSError as exc:
            await self._refuse(writer, 502, f"cannot reach {host}:{port}: {exc}")
            return
        up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
        if status == 403:  # clients print the status line: it carries the why
            said = " ".join(message.split()).encode("latin-1", "replace").decode("latin-1")
            reason = f"Forbidden by the Omnigent sandbox: {said}"[:400]
        body = (message + "\n").encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def proxy_env(port: int) -> dict[str, str]:
    """What the agent's environment gets so its tools use the proxy (and not for loopback).
    npm's update notifier is off: its check of registry.npmjs.org on every `npm` run would be
    a network ask the agent never made (even `npm install --offline` runs it)."""
    url = f"http://127.0.0.1:{port}"
    no_proxy = "127.0.0.1,::1"
    return {
        "HTTPS_PROXY": url,
        "HTTP_PROXY": url,
        "https_proxy": url,
        "http_proxy": url,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        "npm_config_proxy": url,
        "npm_config_https_proxy": url,
        "npm_config_update_notifier": "false",
    }
