"""The one network path out of a sandbox: loopback TCP ports bridged over unix sockets.

Inside, the agent connects to 127.0.0.1:PORT as usual; a relay (socat) started in the sandbox
listens there and forwards each connection to a unix socket in a directory both sides see. On
the host, `Bridge` accepts on that socket and connects on: to the unix socket named for PORT
(the model gateway's, which has no TCP port for a sandboxed agent: it sees the agent's
``Host: 127.0.0.1:PORT`` and accepts it), else to the real 127.0.0.1:PORT. A service meant for
one sandbox only (the egress proxy) serves the bridge's socket itself instead. The directory is
private to the user (0700). Nothing else can leave: the sandbox has no network interface but
loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path

SOCAT_INSTALL = "apt-get install -y --no-install-recommends socat"


def socket_path(bridge_dir: Path, port: int) -> Path:
    return bridge_dir / f"port-{port}.sock"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Bridge:
    """Host side: one unix-socket listener per bridged port, forwarding to the unix socket
    `targets` names for the port, else to the same port on the host's loopback."""

    def __init__(
        self, bridge_dir: Path, ports: tuple[int, ...], targets: Mapping[int, Path] | None = None
    ):
        self.bridge_dir = bridge_dir
        self.ports = ports
        self.targets = dict(targets or {})
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        self.bridge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for port in self.ports:
            path = socket_path(self.bridge_dir, port)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._servers.append(
                await asyncio.start_unix_server(
                    functools.partial(self._forward, port=port), path=str(path)
                )
            )
            path.chmod(0o600)

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int
    ) -> None:
        target = self.targets.get(port)
        try:
            if target is not None:
                up_reader, up_writer = await asyncio.open_unix_connection(str(target))
            else:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        for port in self.ports:
            with contextlib.suppress(FileNotFoundError):
                socket_path(self.bridge_dir, port).unlink()
        with contextlib.suppress(OSError):
            self.bridge_dir.rmdir()  # only if empty: never anyone else's files


def inside_command(argv: list[str], bridge_dir: Path | None, ports: tuple[int, ...]) -> list[str]:
    """`argv` preceded by the relays, run inside the sandbox; the agent starts once they listen."""
    if not ports or bridge_dir is None:
        return argv
    socat = shutil.which("socat")
    if socat is None:
        raise FileNotFoundError(
            f"socat is needed for the sandbox's network bridge: {SOCAT_INSTALL}"
        )
    lines = []
    for port in ports:
        target = shlex.quote(str(socket_path(bridge_dir, port)))
        lines.append(
            f"{socat} TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{target} &"
        )
        # Wait (about 2 s at most) until the relay listens, so the agent's first request finds
        # it: its socket in LISTEN state (0A) in the sandbox's own /proc/net/tcp, read with
        # bash builtins. (Connecting to probe would fork a relay and open a connection to the
        # gateway; a subshell and a 10 ms sleep per try made the start-up wait ~15 ms.)
        lines.append(
            f"for ((i = 0; i < 2000; i++)); do while read -r _ at _ state _; do "
            f"[[ $at == 0100007F:{port:04X} && $state == 0A ]] && break 2; "
            "done < /proc/net/tcp; sleep 0.001; done"
        )
    script = "\n".join(lines) + '\nexec "$@"'
    return ["/bin/bash", "-c", script, "omnikernel-sandbox", *argv]
