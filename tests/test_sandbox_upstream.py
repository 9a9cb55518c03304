"""The egress proxy's one way out (`omnikernel.sandbox.upstream`): ``egress_resolve`` sends a
real name to a local address while TLS still checks the real name, ``egress_ca`` adds a CA.

A TLS server on 127.0.0.1 with a certificate for ``pypi.org`` from a test CA stands in for
PyPI; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from omnikernel.kernel.settings import KernelSettings, SettingError
from omnikernel.sandbox.upstream import (
    DIRECT,
    EgressRoutes,
    LocalAddressError,
    RouteError,
    check_ca_file,
    parse_resolve,
)


def test_resolve_takes_a_mapping_our_strings_and_curls():
    assert parse_resolve({"PyPI.org:443": "127.0.0.1:8443"}) == {
        ("pypi.org", 443): ("127.0.0.1", 8443)
    }
    assert parse_resolve(["registry.npmjs.org:443=[::1]:9443", " "]) == {
        ("registry.npmjs.org", 443): ("::1", 9443)
    }
    assert parse_resolve(["pypi.org:443:10.0.0.5"]) == {("pypi.org", 443): ("10.0.0.5", 443)}


@pytest.mark.parametrize("bad", ["pypi.org=127.0.0.1:1", "pypi.org:443=127.0.0.1", "x:99999=y:1"])
def test_a_bad_resolve_entry_says_what_it_takes(bad):
    with pytest.raises(RouteError, match="host:port"):
        parse_resolve([bad])


def test_the_variables_are_read_and_a_bad_one_is_said_and_ignored(monkeypatch, tmp_path):
    ca = trustme.CA()
    bundle = tmp_path / "corp.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("OMNIKERNEL_EGRESS_RESOLVE", "pypi.org:443=127.0.0.1:8443")
    monkeypatch.setenv("OMNIKERNEL_EGRESS_CA", str(bundle))
    settings = KernelSettings()
    routes = settings.egress_routes()
    assert routes.target("pypi.org", 443) == ("127.0.0.1", 8443)
    assert routes.target("pypi.org", 80) == ("pypi.org", 80)
    assert routes.ca_file == bundle

    monkeypatch.setenv("OMNIKERNEL_EGRESS_RESOLVE", "pypi.org")
    monkeypatch.setenv("OMNIKERNEL_EGRESS_CA", str(tmp_path / "missing.pem"))
    settings = KernelSettings()
    problems = " ".join(settings.env_problems())
    assert "OMNIKERNEL_EGRESS_RESOLVE" in problems and "OMNIKERNEL_EGRESS_CA" in problems
    assert settings.egress_routes() == EgressRoutes()

    settings = KernelSettings(egress_ca=str(tmp_path / "missing.pem"))
    with pytest.raises(SettingError, match="c.KernelSettings.egress_ca"):
        settings.egress_routes()


def test_a_file_that_is_no_ca_bundle_is_refused(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(RouteError, match="PEM CA bundle"):
        check_ca_file(str(junk))


async def _tls_server(ca: trustme.CA, name: str) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from " + name.encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def test_a_real_name_reaches_its_stand_in_and_tls_checks_that_name(tmp_path: Path):
    ca = trustme.CA()
    bundle = tmp_path / "corp.pem"
    ca.cert_pem.write_to_path(str(bundle))

    async def scenario() -> None:
        server, port = await _tls_server(ca, "pypi.org")
        async with server:
            routes = EgressRoutes(resolve=parse_resolve({"pypi.org:443": f"127.0.0.1:{port}"}))
            # Without the CA the stand-in is not trusted: the system's CAs alone refuse it.
            with pytest.raises(ssl.SSLCertVerificationError):
                await routes.open_upstream("pypi.org", 443, routes.tls_context())
            trusted = EgressRoutes(resolve=routes.resolve, ca_file=check_ca_file(str(bundle)))
            reader, writer = await trusted.open_upstream("pypi.org", 443, trusted.tls_context())
            assert await reader.readline() == b"hello from pypi.org\n"
            writer.close()
            # The address is not the name: a name the certificate does not carry is refused.
            other = EgressRoutes(
                resolve=parse_resolve({"evil.example:443": f"127.0.0.1:{port}"}),
                ca_file=trusted.ca_file,
            )
            with pytest.raises(ssl.SSLCertVerificationError):
                await other.open_upstream("evil.example", 443, other.tls_context())
            # A plain connection (the proxy's tunnels) goes to the same address.
            reader, writer = await trusted.open_upstream("pypi.org", 443)
            writer.close()

    asyncio.run(scenario())


def test_an_approved_name_that_resolves_to_this_machine_is_refused(monkeypatch):
    """The attack: the agent asks for an innocent-looking name whose DNS answer is 127.0.0.1
    (or the metadata service), so a person's "yes" opens the kernel's own ports. The listener
    is live (a pin reaches it), but a name reaches neither it nor 169.254.169.254."""
    answers = {"innocent.example": "127.0.0.1", "meta.example": "169.254.169.254",
               "mapped.example": "::ffff:127.0.0.1", "fine.example": "127.0.0.1",
               "localhost": "127.0.0.1", "127.0.0.1": "127.0.0.1"}  # fmt: skip

    async def scenario() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"kernel-side service\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()

        async def fake_getaddrinfo(host, p, **kwargs):
            family = socket.AF_INET6 if ":" in answers[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answers[host], p))]

        monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
        async with server:
            pinned = EgressRoutes(resolve=parse_resolve({"fine.example:443": f"127.0.0.1:{port}"}))
            reader, writer = await pinned.open_upstream("fine.example", 443)
            assert await reader.readline() == b"kernel-side service\n"
            writer.close()
            for name in ("innocent.example", "meta.example", "mapped.example"):
                with pytest.raises(LocalAddressError, match="an address of this machine"):
                    await DIRECT.open_upstream(name, port)
            # What says it is local is taken as the person saw it.
            for plain in ("127.0.0.1", "localhost"):
                reader, writer = await DIRECT.open_upstream(plain, port)
                assert await reader.readline() == b"kernel-side service\n"
                writer.close()

    asyncio.run(scenario())
