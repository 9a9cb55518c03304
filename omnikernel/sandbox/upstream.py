"""Where the egress proxy's connections go out: the one place that opens them.

Two settings shape it, both for networks that are not the open internet:

- ``egress_resolve``: ``host:port`` to ``address:port`` overrides, the way ``curl --resolve``
  (and ``--connect-to``) pins a name. The agent still asks for ``pypi.org:443`` (the policy,
  the approval card, TLS's server name all see the real name); only the TCP connection goes to
  the address given. A company's split DNS uses it, and so do tests that put a package index
  stand-in on loopback under its real name.
- ``egress_ca``: an extra CA bundle trusted, besides the system's, by whoever on the proxy side
  verifies an upstream's TLS (a company's TLS inspection re-signs every site with its own CA).
  The proxy's plain tunnels do not verify anything (the agent's own client does, end to end);
  the credential broker terminates TLS and must, and takes its context from `tls_context`.

A name that resolves to this machine's loopback or link-local addresses (the cloud metadata
service) is refused: a card that said ``example.com`` must not open the kernel's own ports
through DNS. Names that say they are local (``localhost``, ``127.0.0.1``) are taken as seen.

Nothing here reads a setting's variable: the kernel's settings parse them and pass
`EgressRoutes` down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path

Address = tuple[str, int]


class RouteError(ValueError):
    """An ``egress_resolve`` entry or ``egress_ca`` file that cannot be used; the message says
    what it takes."""


def split_address(text: str, what: str) -> Address:
    """``host:port`` (``[::1]:443`` for IPv6) as a pair; `RouteError` naming `what` if not."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RouteError(f"{what} {text!r} is not host:port (e.g. pypi.org:443).")
    return host.lower().rstrip("."), int(port)


def parse_resolve(entries: Mapping[str, str] | Iterable[str]) -> dict[Address, Address]:
    """Overrides from a mapping ``{'pypi.org:443': '127.0.0.1:8443'}`` or from strings
    ``'pypi.org:443=127.0.0.1:8443'`` (or curl's ``'pypi.org:443:127.0.0.1'``, same port)."""
    pairs: list[tuple[str, str]] = []
    if isinstance(entries, Mapping):
        pairs = [(str(k), str(v)) for k, v in entries.items()]
    else:
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            if "=" in entry:
                name, _, target = entry.partition("=")
            else:  # curl --resolve: host:port:address
                parts = entry.split(":", 2)
                if len(parts) != 3:
                    raise RouteError(
                        f"egress_resolve entry {entry!r} is neither host:port=address:port "
                        "nor curl's host:port:address."
                    )
                name, target = f"{parts[0]}:{parts[1]}", f"{parts[2]}:{parts[1]}"
            pairs.append((name, target))
    return {
        split_address(name, "egress_resolve name"): split_address(target, "egress_resolve target")
        for name, target in pairs
    }


def check_ca_file(path: str) -> Path:
    """`path` as a CA bundle the TLS library accepts; `RouteError` saying what is wrong."""
    found = Path(path).expanduser()
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(found))
    except (OSError, ssl.SSLError) as exc:
        raise RouteError(
            f"egress_ca {path!r} is not a readable PEM CA bundle ({exc}); give the file of the "
            "CA that signs your network's TLS (e.g. /usr/local/share/ca-certificates/corp.crt)."
        ) from None
    return found


@dataclasses.dataclass(frozen=True)
class EgressRoutes:
    """How the proxy reaches an upstream (see the module docstring). The default: directly,
    trusting the system's CAs."""

    resolve: Mapping[Address, Address] = dataclasses.field(default_factory=dict)
    ca_file: Path | None = None

    def target(self, host: str, port: int) -> Address:
        """Where a connection to `host`:`port` really goes."""
        return self.resolve.get((host.lower().rstrip("."), port), (host, port))

    async def open_upstream(
        self, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to `host`:`port`, through `resolve`; over TLS with `tls` (verified
        against `host`, the real name, whatever address it went to). OSError if it fails;
        `LocalAddressError` (an OSError) if a name resolves to this machine (see
        `local_addresses`)."""
        override = self.resolve.get((host.lower().rstrip("."), port))
        if override is not None:  # the user's own pin: taken as given
            address, real_port = override
        else:
            address, real_port = await resolve_checked(host, port)
        if tls is None:
            return await asyncio.open_connection(address, real_port)
        return await asyncio.open_connection(address, real_port, ssl=tls, server_hostname=host)

    def tls_context(self) -> ssl.SSLContext:
        """A client context for verifying an upstream: the system's CAs plus `ca_file`."""
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
        return context


DIRECT = EgressRoutes()


class LocalAddressError(OSError):
    """A host name that resolves to this machine (or its cloud metadata service)."""


def is_local(address: str) -> bool:
    """Loopback, link-local (169.254.169.254, the cloud metadata service) or unspecified."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def names_this_machine(host: str) -> bool:
    """A host that says it is this machine: a local address, ``localhost`` or ``*.localhost``."""
    name = host.lower().rstrip(".")
    return is_local(name) or name == "localhost" or name.endswith(".localhost")


async def resolve_checked(host: str, port: int) -> Address:
    """The address to connect to for `host`. A name that does not say it is local (what a
    person approved as ``example.com``) must not lead to this machine's loopback or the
    metadata service: DNS can point any name there (``LocalAddressError``). A name or address
    that says so plainly is taken as the person or the rule saw it."""
    if names_this_machine(host):
        return host, port
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    if not infos:
        raise OSError(f"{host} has no address")
    addresses = [str(info[4][0]) for info in infos]
    local = [a for a in addresses if is_local(a)]
    if local:
        raise LocalAddressError(
            f"{host} resolves to {local[0]}, an address of this machine (or its metadata "
            f"service); allow that address itself if you mean it"
        )
    return addresses[0], port
