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

Nothing here reads a setting's variable: the kernel's settings parse them and pass
`EgressRoutes` down.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
        against `host`, the real name, whatever address it went to). OSError if it fails."""
        address, real_port = self.target(host, port)
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
