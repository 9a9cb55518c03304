"""The egress proxy asks about every host its rules do not allow (`omnikernel.sandbox.egress`):
the connection waits for the answer, a refusal is a 403 whose status line says why (what pip and
git print), a failing decision refuses (fail closed), and an allowed host is reached through
``egress_resolve``. In process, on a unix socket, as the sandbox's relay reaches it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from omnikernel.sandbox.egress import EgressProxy
from omnikernel.sandbox.upstream import EgressRoutes, parse_resolve


async def _upstream() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"upstream says hi\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


#: The client's writers, kept open (a collected StreamWriter closes its connection).
CLIENTS: list[asyncio.StreamWriter] = []


async def _connect(path: Path, target: str) -> tuple[bytes, asyncio.StreamReader]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    CLIENTS.append(writer)
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    return head, reader


def test_an_unknown_host_waits_for_the_answer_then_goes_or_fails_at_once(tmp_path):
    asked: list[tuple[str, int]] = []
    told: list[str] = []
    answers: dict[str, asyncio.Future[str | None]] = {}

    async def scenario() -> None:
        server, port = await _upstream()
        loop = asyncio.get_running_loop()
        answers["pypi.org"] = loop.create_future()

        async def ask(host: str, p: int, allowed: bool) -> str | None:
            if allowed:  # the proxy's rules allow it: the session lets it go (no deny-host)
                told.append(host)
                return None
            asked.append((host, p))
            if host == "boom.example":
                raise RuntimeError("policy broke")
            if host in answers:
                return await answers[host]
            return f"{host}:{p} was denied by deny-host {host}"

        local = f"127.0.0.1:{port}"
        routes = EgressRoutes(
            resolve=parse_resolve({"pypi.org:443": local, "registry.npmjs.org:443": local})
        )
        proxy = EgressProxy(("@npm",), tmp_path / "egress.sock", routes, ask)
        await proxy.start()
        async with server:
            # The connection is held while the person decides ...
            waiting = asyncio.ensure_future(_connect(proxy.path, "pypi.org:443"))
            await asyncio.sleep(0.3)
            assert not waiting.done() and asked == [("pypi.org", 443)]
            answers["pypi.org"].set_result(None)  # ... and goes on once approved.
            head, reader = await asyncio.wait_for(waiting, 10)
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readline() == b"upstream says hi\n"

            started = time.monotonic()
            head, _ = await _connect(proxy.path, "evil.example:443")
            assert time.monotonic() - started < 2
            status = head.split(b"\r\n")[0].decode()
            assert status.startswith("HTTP/1.1 403 Forbidden by the Omnigent sandbox:")
            assert "evil.example:443 was denied by deny-host evil.example" in status
            assert proxy.denied == ["evil.example:443"]

            head, _ = await _connect(proxy.path, "boom.example:443")
            assert b"403" in head.split(b"\r\n")[0] and b"policy broke" in head

            # A host the proxy's rules allow is still put to the session, saying so.
            head, reader = await _connect(proxy.path, "registry.npmjs.org:443")
            assert head.startswith(b"HTTP/1.1 200") and told == ["registry.npmjs.org"]
            assert await reader.readline() == b"upstream says hi\n"

        await proxy.close()

    asyncio.run(scenario())


def test_without_a_decision_the_rules_allow_and_every_other_host_is_refused(tmp_path):
    async def scenario() -> None:
        server, port = await _upstream()
        routes = EgressRoutes(
            resolve=parse_resolve({"registry.npmjs.org:443": f"127.0.0.1:{port}"})
        )
        proxy = EgressProxy(("@npm",), tmp_path / "egress.sock", routes)
        await proxy.start()
        async with server:
            head, reader = await _connect(proxy.path, "registry.npmjs.org:443")
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readline() == b"upstream says hi\n"
            head, _ = await _connect(proxy.path, "pypi.org:443")
            assert b"403" in head.split(b"\r\n")[0] and b"%sandbox allow pypi.org:443" in head
        await proxy.close()

    asyncio.run(scenario())


def test_a_host_that_is_no_name_is_refused_before_anyone_is_asked(tmp_path):
    asked: list[str] = []

    async def ask(host: str, port: int, allowed: bool) -> str | None:
        asked.append(host)
        return None

    async def scenario() -> None:
        proxy = EgressProxy((), tmp_path / "egress.sock", ask=ask)
        await proxy.start()
        for target in ("![x](http://evil.example/?k=1):443", "<b>x</b>:443", "pypi.org:0"):
            head, _ = await _connect(proxy.path, target)
            assert head.startswith(b"HTTP/1.1 400"), head
        await proxy.close()

    asyncio.run(scenario())
    assert asked == []
