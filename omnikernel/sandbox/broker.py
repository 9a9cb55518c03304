"""Brokered hosts: the egress proxy answers their TLS itself and adds the user's credential.

For a host the user marks as brokered (``%sandbox broker github.com``), a ``CONNECT host:443``
from the sandbox is not tunnelled: the proxy completes the TLS handshake itself with a leaf
certificate from the session's CA (`session_ca`), reads each HTTP/1.1 request, drops whatever
``Authorization`` the sandbox sent, adds the user's own credential for the host (found on the
host side, `host_credentials`) and forwards the request over a verified TLS connection to the
real host. Responses come back unchanged. Every other host stays a plain tunnel: the proxy
never sees its bytes.

A ``git push`` (``POST .../git-receive-pack``, however the path is spelled) is read before it
leaves: its ref updates (`git_push`; an update the pack cannot show to be a fast-forward is
settled by asking the remote's upload-pack for the commits in between) go to the session's
decision function (`ask_push`) with the remote's default branch; a refused push never reaches
the remote, and git prints our reason as the remote's (``! [remote rejected] ...``).

Responses are passed on as they come, but for the credential: a host that echoes request
headers would hand it to the agent, so every form of it is blanked out (`_Scrub`), and brokered
requests ask for uncompressed bodies so that it can be seen.

The credential lives in the kernel's memory only; it is given to the session's redactor
(`on_secret`) before first use, so no event, cell or log line shows it, and the proxy logs no
header. HTTP framing is h11's (a maintained, sans-IO HTTP/1.1 implementation): keep-alive,
chunked bodies and ``Expect: 100-continue`` are git's daily fare and not ours to re-implement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import h11

from omnikernel.sandbox import host_credentials
from omnikernel.sandbox.broker_setup import AskPush
from omnikernel.sandbox.git_push import (
    Push,
    PushFormatError,
    ancestry_request,
    read_push,
    refusal,
    settled,
)
from omnikernel.sandbox.host_credentials import Credential
from omnikernel.sandbox.session_ca import SessionCA
from omnikernel.sandbox.upstream import DIRECT, EgressRoutes
from omnikernel.store.redact import variants

log = logging.getLogger(__name__)

#: The largest push the proxy reads into memory to judge (larger ones are refused, saying so).
MAX_PUSH_BYTES = 512 * 1024**2
#: The most the broker reads of the remote's history to settle whether a push forces.
MAX_ANCESTRY_BYTES = 64 * 1024**2
READ_SIZE = 65536
#: Headers the sandbox may not send on: the proxy's own, and any credential of its making.
DROPPED = {b"authorization", b"proxy-authorization", b"proxy-connection", b"expect"}
SYMREF = re.compile(rb"symref=HEAD:refs/heads/([^\s\x00]+)")


class Broker:
    """See the module docstring. One per agent process, owned by its egress proxy."""

    def __init__(
        self,
        hosts: dict[str, str],
        ca: SessionCA,
        *,
        ask_push: AskPush | None = None,
        on_secret: Callable[[str, str], None] | None = None,
        routes: EgressRoutes = DIRECT,
        find_credential: Callable[[str, str], Credential | None] | None = None,
    ):
        self.hosts = hosts
        self.ca = ca
        self.ask_push = ask_push
        self.on_secret = on_secret
        self.routes = routes
        #: Verifies the real host (system CAs and ``egress_ca``): the broker's TLS is its own.
        self.tls = routes.tls_context()
        self.find_credential = find_credential or (
            lambda host, variable: host_credentials.find(host, variable)
        )
        self._credentials: dict[str, asyncio.Task[Credential | None]] = {}
        #: Blank the credential out of responses (a host that echoes request headers would
        #: hand it to the agent). Off only in the test that shows the leak it stops.
        self.scrub = True
        #: What the broker did, for the cell and tests: "push github.com/o/r main: refused".
        self.log: list[str] = []

    async def open_upstream(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await self.routes.open_upstream(host, port, self.tls)

    def brokers(self, host: str, port: int) -> bool:
        return port == 443 and self.ca.covers(host)

    async def credential(self, host: str) -> Credential | None:
        """The user's credential for `host`, looked up once (off the loop) and redacted."""
        host = host.lower().rstrip(".")
        task = self._credentials.get(host)
        if task is None:
            variable = self.hosts.get(host, "")
            task = asyncio.ensure_future(asyncio.to_thread(self.find_credential, host, variable))
            self._credentials[host] = task
        try:
            found = await task
        except Exception:  # a helper that broke: no credential (git then says so)
            log.warning("looking up the credential for %s failed", host, exc_info=True)
            found = None
        if found is not None and self.on_secret is not None:
            self.on_secret(found.secret, f"brokered credential for {host}")
        return found

    async def serve(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Take over a CONNECT the proxy answered 200 to: TLS with the sandbox, then requests."""
        host = host.lower().rstrip(".")
        try:
            await writer.start_tls(self.ca.server_context(host))
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            log.info("brokered TLS with the sandbox for %s failed: %s", host, exc)
            writer.close()
            return
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        client = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(client, reader)
                if not isinstance(request, h11.Request):
                    return
                if upstream is None:
                    try:
                        upstream = await self.open_upstream(host, port)
                    except (OSError, ssl.SSLError) as exc:
                        await _respond(client, writer, 502, f"cannot reach {host}:{port}: {exc}")
                        return
                again = await self._exchange(host, port, request, client, reader, writer, upstream)
                if not again or client.our_state is h11.MUST_CLOSE:
                    return
                client.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("brokered connection to %s ended: %s", host, type(exc).__name__)
        finally:
            for w in (writer, upstream[1] if upstream else None):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _exchange(
        self,
        host: str,
        port: int,
        request: h11.Request,
        client: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        """One request and its response; False when the connection must end."""
        target = request.target.decode("latin-1")
        path = target.split("?", 1)[0]
        headers = [(k, v) for k, v in request.headers if k.lower() not in DROPPED]
        content_type = b"".join(v for k, v in request.headers if k.lower() == b"content-type")
        # A push however spelled: an encoded path, an odd suffix, or its content type alone.
        is_push = request.method == b"POST" and (
            "git-receive-pack" in unquote(path) or b"receive-pack" in content_type.lower()
        )
        credential = await self.credential(host)
        scrub = _Scrub(credential if self.scrub else None)
        if credential is not None:
            headers.append((b"authorization", credential.authorization().encode()))
            # Plain bytes back, so a response that reflects the credential can be scrubbed.
            headers = [(k, v) for k, v in headers if k.lower() != b"accept-encoding"]
            headers.append((b"accept-encoding", b"identity"))
        if client.they_are_waiting_for_100_continue:
            writer.write(client.send(h11.InformationalResponse(status_code=100, headers=[])))
        server = h11.Connection(h11.CLIENT)
        up_reader, up_writer = upstream
        if is_push:
            body = await _read_body(client, reader, MAX_PUSH_BYTES)
            if body is None:
                await _respond(client, writer, 413, "this push is too large for the broker to read")
                return False
            refused = await self._judge_push(host, port, path, body)
            if refused is not None:
                await _send_all(
                    client,
                    writer,
                    200,
                    [(b"content-type", b"application/x-git-receive-pack-result")],
                    refused,
                )
                return True
            headers = [
                (k, v)
                for k, v in headers
                if k.lower() not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            up_writer.write(
                server.send(
                    h11.Request(method=request.method, target=request.target, headers=headers)
                )
            )
            up_writer.write(server.send(h11.Data(data=body)))
            up_writer.write(server.send(h11.EndOfMessage()))
        else:
            up_writer.write(
                server.send(
                    h11.Request(method=request.method, target=request.target, headers=headers)
                )
            )
            while True:
                event = await _next_event(client, reader)
                if isinstance(event, h11.Data):
                    up_writer.write(server.send(event))
                elif isinstance(event, h11.EndOfMessage):
                    up_writer.write(server.send(event))
                    break
                else:
                    return False
        await up_writer.drain()
        while True:  # the response, as it comes
            event = await _next_event(server, up_reader)
            if isinstance(event, h11.InformationalResponse):
                continue  # the proxy answered 100-continue itself
            if isinstance(event, h11.Response):
                writer.write(
                    client.send(
                        h11.Response(
                            status_code=event.status_code,
                            headers=list(event.headers),
                            reason=event.reason,
                        )
                    )
                )
            elif isinstance(event, h11.Data):
                if shown := scrub.feed(bytes(event.data)):
                    writer.write(client.send(h11.Data(data=shown)))
            elif isinstance(event, h11.EndOfMessage):
                if rest := scrub.flush():
                    writer.write(client.send(h11.Data(data=rest)))
                writer.write(client.send(h11.EndOfMessage()))
                await writer.drain()
                return server.our_state is not h11.MUST_CLOSE
            else:
                return False
            await writer.drain()

    async def _judge_push(self, host: str, port: int, path: str, body: bytes) -> bytes | None:
        """None to forward the push; else the receive-pack result refusing it."""
        repo = unquote(path).rstrip("/").removesuffix("/git-receive-pack")
        remote = f"{host}{repo.removesuffix('.git')}"
        try:
            push = read_push(body)
        except PushFormatError as exc:
            message = f"Omnigent: the broker cannot read this push ({exc}), so it is refused"
            self.log.append(f"push {remote}: unreadable")
            return refusal(Push((), ()), {}, message)
        if self.ask_push is None:
            return None
        advertised = await self._upstream_request(
            host, port, "GET", f"{repo}/info/refs?service=git-upload-pack", 1024**2
        )
        found = SYMREF.search(advertised or b"")
        default = found.group(1).decode("utf-8", "replace") if found else ""
        push = await self._settle(host, port, repo, push, _capabilities(advertised or b""))
        reason = await self.ask_push(remote, default, push)
        branches = " ".join(u.branch for u in push.updates)
        self.log.append(f"push {remote} {branches}: {'refused' if reason else 'allowed'}")
        if reason is None:
            return None
        return refusal(push, {}, reason if reason.startswith("Omnigent") else f"Omnigent: {reason}")

    async def _settle(
        self, host: str, port: int, repo: str, push: Push, capabilities: tuple[bytes, ...]
    ) -> Push:
        """`push` with each "maybe-force" update settled by asking the remote for the commits
        between where the pack leaves off and the old commit (`git_push.settled`): a force
        push made with ``--amend`` or a rebase is then known as one."""
        updates = list(push.updates)
        for i, update in enumerate(updates[:8]):
            if update.kind != "maybe-force":
                continue
            wants = push.boundary(update)
            body = ancestry_request(wants, update.old, capabilities)
            answer = await self._upstream_request(
                host,
                port,
                "POST",
                f"{repo}/git-upload-pack",
                MAX_ANCESTRY_BYTES,
                body,
                [(b"content-type", b"application/x-git-upload-pack-request")],
            )
            if answer is not None:
                updates[i] = dataclasses.replace(update, kind=settled(update, push, answer))
        return dataclasses.replace(push, updates=tuple(updates))

    async def _upstream_request(
        self,
        host: str,
        port: int,
        method: str,
        target: str,
        limit: int,
        body: bytes = b"",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> bytes | None:
        """One request of the broker's own to the real host, with the credential: the body of a
        200 answer (None for anything else, or past `limit` bytes)."""
        try:
            up_reader, up_writer = await self.open_upstream(host, port)
        except (OSError, ssl.SSLError):
            return None
        conn = h11.Connection(h11.CLIENT)
        headers = [
            (b"host", host.encode()),
            (b"user-agent", b"git/omnikernel-broker"),
            (b"connection", b"close"),
            (b"content-length", str(len(body)).encode()),
            *(extra or []),
        ]
        if (credential := await self.credential(host)) is not None:
            headers.append((b"authorization", credential.authorization().encode()))
        try:
            up_writer.write(conn.send(h11.Request(method=method, target=target, headers=headers)))
            if body:
                up_writer.write(conn.send(h11.Data(data=body)))
            up_writer.write(conn.send(h11.EndOfMessage()))
            got, status = b"", 0
            while True:
                event = await _next_event(conn, up_reader)
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    got += event.data
                    if len(got) > limit:
                        return None
                elif not isinstance(event, h11.InformationalResponse):
                    break
            return got if status == 200 else None
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError):
            return None
        finally:
            up_writer.close()


def _capabilities(advertisement: bytes) -> tuple[bytes, ...]:
    """The capabilities on the first ref line of an upload-pack advertisement."""
    _, nul, rest = advertisement.partition(b"\0")
    return tuple(rest.split(b"\n", 1)[0].split()) if nul else ()


class _Scrub:
    """Blanks a credential (and its encoded forms) out of a response body as it streams: each
    form becomes as many ``*``, so a Content-Length still holds. A tail that could begin a form
    waits for the next piece."""

    def __init__(self, credential: Credential | None):
        forms: set[str] = set()
        if credential is not None:
            forms = variants(credential.secret) | {credential.authorization()}
        self.forms = sorted((f.encode() for f in forms), key=len, reverse=True)
        self.keep = max((len(f) for f in self.forms), default=1) - 1
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        if not self.forms:
            return data
        text = self.held + data
        for form in self.forms:
            text = text.replace(form, b"*" * len(form))
        self.held = text[len(text) - self.keep :] if self.keep else b""
        return text[: len(text) - len(self.held)]

    def flush(self) -> bytes:
        held, self.held = self.held, b""
        return held


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            conn.receive_data(data)
            if not data and conn.their_state is h11.DONE:
                return h11.ConnectionClosed()
            continue
        return event


async def _read_body(
    conn: h11.Connection, reader: asyncio.StreamReader, limit: int
) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > limit:
                return None
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:
            raise ConnectionError("the request ended before its body")


async def _send_all(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _respond(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
) -> None:
    with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
        await _send_all(
            conn,
            writer,
            status,
            [(b"content-type", b"text/plain"), (b"connection", b"close")],
            (message + "\n").encode(),
        )
