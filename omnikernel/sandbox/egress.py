"""Network allow rules for hosts the user trusts, enforced outside the agent's reach.

The sandbox has no network; when a notebook allows some hosts (say a package registry for
`npm install`), the kernel runs this small HTTP proxy on the host and bridges its port into the
sandbox, and the agent gets ``HTTPS_PROXY``/``HTTP_PROXY`` pointing at it. The proxy tunnels
``CONNECT host:port`` and forwards absolute-form HTTP requests only to allowed hosts and
answers 403 to everything else. The rules live in the kernel, not in the sandbox, so the agent
cannot change them.

A rule is ``host`` (ports 80 and 443), ``host:port``, or ``*.domain`` (any subdomain).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from .bridge import pipe

DEFAULT_PORTS = (80, 443)


def allowed(rules: tuple[str, ...], host: str, port: int) -> bool:
    host = host.lower().rstrip(".")
    for rule in rules:
        rule_host, _, rule_port = rule.lower().partition(":")
        ports = (int(rule_port),) if rule_port else DEFAULT_PORTS
        if port not in ports:
            continue
        if rule_host.startswith("*."):
            if host.endswith(rule_host[1:]):
                return True
        elif host == rule_host:
            return True
    return False


class EgressProxy:
    """See the module docstring. `port` is set once started."""

    def __init__(self, rules: tuple[str, ...]):
        self.rules = rules
        self.port = 0
        self.denied: list[str] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

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
        if not allowed(self.rules, host, port):
            self.denied.append(f"{host}:{port}")
            await self._refuse(
                writer, 403,
                f"{host}:{port} is not allowed from the sandbox; allow it with "
                f"%sandbox allow {host}:{port}",
            )  # fmt: skip
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            await self._refuse(writer, 502, f"cannot reach {host}:{port}: {exc}")
            return
        if upstream_head:
            up_writer.write(upstream_head)
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, status: int, message: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
        body = (message + "\n").encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def proxy_env(port: int) -> dict[str, str]:
    """What the agent's environment gets so its tools use the proxy (and not for loopback)."""
    url = f"http://127.0.0.1:{port}"
    no_proxy = "127.0.0.1,::1"
    return {
        "HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url,
        "NO_PROXY": no_proxy, "no_proxy": no_proxy,
        "npm_config_proxy": url, "npm_config_https_proxy": url,
    }  # fmt: skip
