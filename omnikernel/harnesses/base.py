"""The harness interface: what every agent adapter implements, built-in or third-party.

A harness wraps one agent CLI driven through its structured machine mode. It translates that
CLI's protocol into `Event`s and does nothing else: it never renders, stores or decides. It asks
the session's decision function about every permission request, starts its process only through
`omnikernel.sandbox.spawn.spawn`, and gives the CLI a private home, config dir and TMPDIR under
`HarnessContext.state_dir` so nothing of the user's own agent config leaks in or out.

Adapters are found through the ``omnikernel.harnesses`` entry-point group (see `registry`).
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from omnikernel.approvals.decide import Decision
from omnikernel.events import Event
from omnikernel.gateway.upstream import Upstream
from omnikernel.harnesses.mcp import McpServer
from omnikernel.proc.turnstop import ProcessInfo
from omnikernel.sandbox import SandboxSpec, SandboxUnavailableError, for_agent
from omnikernel.sandbox import resolve as resolve_sandbox
from omnikernel.sandbox.broker_setup import BrokerSetup
from omnikernel.sandbox.egress import NetworkAsk
from omnikernel.sandbox.spawn import HarnessProcess, spawn
from omnikernel.sandbox.spec import command_readable
from omnikernel.sandbox.upstream import DIRECT, EgressRoutes

#: The session's decision function: given an ``approval_request`` event, allow or deny.
Decide = Callable[[Event], Awaitable[Decision]]


class HarnessError(Exception):
    """A harness cannot run; the message says what to do about it."""


class HarnessNotInstalledError(HarnessError):
    pass


@dataclasses.dataclass
class HarnessContext:
    """What the session gives a harness to run with."""

    cwd: Path
    state_dir: Path
    upstream: Upstream
    decide: Decide
    model: str | None = None
    binary: str | None = None  # explicit path from config; else found on PATH
    #: Sandbox backend choice: "auto", "bwrap", "firejail" or "off" (an explicit opt-out).
    sandbox: str = "auto"
    #: Hosts the notebook trusts, reachable through the kernel's egress proxy.
    allow_hosts: tuple[str, ...] = ()
    #: How the egress proxy reaches upstreams (``egress_resolve``, ``egress_ca``).
    egress_routes: EgressRoutes = DIRECT
    #: Brokered hosts and the session's hooks for them (`omnikernel.sandbox.broker`).
    broker: BrokerSetup | None = None
    #: The session's network ask: the egress proxy awaits it for each host nothing allows.
    network_ask: NetworkAsk | None = None
    #: Paths the user lets agents read inside the closed home (`%sandbox read`).
    readable: tuple[Path, ...] = ()
    #: Host paths agents must not see: the session store, every session's harness state.
    hidden: tuple[Path, ...] = ()
    #: Seconds a harness may stay silent (no line on its stdout) before the watchdog ends
    #: its turn and stops it; 0: no watchdog.
    watchdog_s: float = 0.0
    #: Where a CLI started with the sandbox off sends its model calls instead of `upstream`
    #: (whose port exists only inside a sandbox), asked for at each such start: the session
    #: opens the gateway's TCP port then (`Gateway.open_tcp`). None: `upstream` serves both.
    unsandboxed: Callable[[], Upstream] | None = None
    #: Files of the folder agents may read but not write (the open notebook).
    read_only: tuple[Path, ...] = ()
    #: The MCP servers the CLI gets, asked for at each start (the kernel's ``notebook`` server
    #: and the user's mcp.toml servers; see `omnikernel.harnesses.mcp`).
    mcp_servers: Callable[[], tuple[McpServer, ...]] = lambda: ()


@dataclasses.dataclass(frozen=True)
class HarnessInfo:
    """One row of `%agents`."""

    name: str
    display_name: str
    installed: bool
    version: str
    binary: str
    install: str


class Harness(abc.ABC):
    """Base class of the agent adapters. Subclasses set the class attributes and the three
    abstract methods; one instance serves one session, one turn at a time."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    binary_name: ClassVar[str]
    #: The CLI's npm package and the version the project tests against.
    npm_package: ClassVar[str]
    pinned_version: ClassVar[str]
    #: The wire format the CLI speaks to its model: "anthropic" or "openai".
    wire: ClassVar[str]
    #: The model used when none is chosen; None: the CLI picks its own.
    default_model: ClassVar[str | None] = None
    #: Whether the CLI can use MCP servers ("" if it can; else why not, as `%agents` says).
    no_mcp: ClassVar[str] = ""
    #: A limit of its MCP support, as `%agents` says it ("" if none).
    mcp_note: ClassVar[str] = ""

    def __init__(self, ctx: HarnessContext):
        self.ctx = ctx
        #: The MCP servers of the CLI's current process (`take_mcp_servers`, at its start).
        self.mcp_servers: tuple[McpServer, ...] = ()

    def take_mcp_servers(self) -> tuple[McpServer, ...]:
        """The MCP servers for the CLI about to start: none if it cannot use them; with the
        sandbox off, none of those reached through a sandbox's bridge (the kernel's own)."""
        servers = () if self.no_mcp else self.ctx.mcp_servers()
        if self.ctx.sandbox == "off":
            servers = tuple(s for s in servers if s.socket is None)
        self.mcp_servers = servers
        return servers

    @classmethod
    def install_command(cls) -> str:
        return f"npm install -g {cls.npm_package}@{cls.pinned_version}"

    @classmethod
    def find_binary(cls, override: str | None = None) -> str | None:
        if override:
            return override if os.access(override, os.X_OK) else None
        return shutil.which(cls.binary_name)

    @classmethod
    def require_binary(cls, override: str | None = None) -> str:
        path = cls.find_binary(override)
        if path:
            return path
        where = f"at {override}" if override else f"`{cls.binary_name}` on PATH"
        raise HarnessNotInstalledError(
            f"{cls.display_name} CLI not found ({where}). Install it with: "
            f"{cls.install_command()} (or `make harness-clis` in the omnikernel checkout), "
            f"or point the kernel at it: c.OmniKernel.harness_paths = "
            f"{{'{cls.name}': '/path/to/{cls.binary_name}'}}."
        )

    @classmethod
    def probe(cls, override: str | None = None) -> HarnessInfo:
        """Is the CLI installed, and which version? Never raises. (Synchronous: `%agents`
        is an IPython magic; `--version` answers in well under a second.)"""
        path = cls.find_binary(override)
        version = ""
        if path:
            try:
                done = subprocess.run(
                    [path, "--version"],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    env={**os.environ, "DISABLE_AUTOUPDATER": "1"},
                )
                version = (done.stdout.strip().splitlines() or [""])[0]
            except (OSError, subprocess.TimeoutExpired) as exc:
                version = f"unknown ({exc.__class__.__name__})"
        return HarnessInfo(
            name=cls.name,
            display_name=cls.display_name,
            installed=bool(path),
            version=version,
            binary=path or "",
            install=cls.install_command(),
        )

    @classmethod
    def package_version(cls, override: str | None = None) -> tuple[str, str] | None:
        """(the binary, its version) read from the manifest of the npm package the CLI was
        installed from, without starting it; None when the binary is not inside
        `npm_package` (then `probe` asks the CLI)."""
        path = cls.find_binary(override)
        package = getattr(cls, "npm_package", "")
        if not path or not package:
            return None
        for folder in list(Path(os.path.realpath(path)).parents)[:4]:
            try:
                manifest = json.loads((folder / "package.json").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(manifest, dict) and manifest.get("name") == package:
                version = manifest.get("version")
                return (path, version) if isinstance(version, str) else None
        return None

    sandbox_backend: str = ""  # the backend the CLI runs under once started ("off": none)

    @property
    def upstream(self) -> Upstream:
        """Where the CLI about to start sends its model calls (read when its environment is
        made): the context's upstream, reached through the sandbox's bridge; with the sandbox
        off, the one `HarnessContext.unsandboxed` opens for it."""
        if self.ctx.sandbox == "off" and self.ctx.unsandboxed is not None:
            return self.ctx.unsandboxed()
        return self.ctx.upstream

    async def start_process(self, argv: list[str], env: dict[str, str]) -> HarnessProcess:
        """Start the CLI through the one spawn function, inside the configured sandbox.

        The sandbox (`sandbox.spec.for_agent`) lets the agent write only its working directory
        and private dirs, closes the home, and bridges exactly one port in: the gateway's (to
        its unix socket when the upstream names one)."""
        try:
            backend = resolve_sandbox(self.ctx.sandbox)
        except SandboxUnavailableError as exc:
            raise HarnessError(str(exc)) from None
        self.sandbox_backend = backend.name if backend else "off"
        spec = None
        if backend is not None:
            upstream = self.ctx.upstream
            port = urlsplit(upstream.base_url).port
            try:
                spec = self._sandbox_spec(argv, env, port, upstream.socket)
            except ValueError as exc:
                raise HarnessError(str(exc)) from None
        return await spawn(argv, cwd=self.ctx.cwd, env=env, sandbox=spec, backend=backend)

    def _sandbox_spec(
        self, argv: list[str], env: dict[str, str], port: int | None, target: Path | None = None
    ) -> SandboxSpec:
        ports = tuple(p for p in (port,) if p)
        targets = {port: target} if port and target else {}
        servers_readable: tuple[Path, ...] = ()
        for server in self.mcp_servers:
            if server.bridged_port and server.socket is not None:
                ports += (server.bridged_port,)
                targets[server.bridged_port] = server.socket
            if not server.is_http:  # a stdio server runs in here: its install must be seen
                servers_readable += command_readable(
                    server.command, server.args, env.get("PATH", "")
                )
        return for_agent(
            workdir=self.ctx.cwd,
            env=env,
            argv0=argv[0],
            private=(self.ctx.state_dir / self.name,),
            readable=(*self.readable_paths(), *servers_readable, *self.ctx.readable),
            hidden=self.ctx.hidden,
            bridged_ports=ports,
            bridge_targets=targets or None,
            allow_hosts=self.ctx.allow_hosts,
            egress_routes=self.ctx.egress_routes,
            broker=self.ctx.broker,
            network_ask=self.ctx.network_ask,
            read_only_files=self.ctx.read_only,
        )

    def readable_paths(self) -> tuple[Path, ...]:
        """Files of ours the CLI must read inside the sandbox (e.g. an extension it loads)."""
        return ()

    def base_environment(self, dirs: Mapping[str, Path]) -> dict[str, str]:
        """What every CLI gets: the kernel's PATH and locale, its private HOME and TMPDIR.
        Each harness adds its own variables; nothing else of the kernel's environment."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(dirs["home"]),
            "TMPDIR": str(dirs["tmp"]),
        }

    def private_dirs(self) -> Mapping[str, Path]:
        """The CLI's own home, config and temp dirs, created under the session's state dir."""
        root = self.ctx.state_dir / self.name
        dirs = {"home": root / "home", "config": root / "config", "tmp": root / "tmp"}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        return dirs

    def adopt_session(self, native_id: str, source: Path) -> bool:
        """Continue the CLI's own session `native_id` (its file `source`, written by the CLI in
        a terminal) from the next start: copy it where this harness's private CLI looks and
        resume it by id. False: this harness cannot (the session hands the turns over)."""
        return False

    def remembers(self) -> bool:
        """Whether the CLI that answers the next turn knows this session's conversation so far
        (it is running, or resumes it natively when started). When not, the session hands it
        the whole conversation instead (`omnikernel.session.handoff`)."""
        return True

    #: Turns the CLI's current process has run (a restart counts from zero again): what the
    #: session's recycling of a long-lived CLI counts (`omnikernel.session.idle`).
    turns_in_process: int = 0

    @property
    def running(self) -> bool:
        """Whether the CLI's process runs now (stopped, the next turn starts it, resuming)."""
        return False

    def background_processes(self) -> list[ProcessInfo]:
        """What the agent left running after its turns (a background shell, a server it
        started): a CLI with any is never stopped for being idle, nor recycled, since its
        stop would end them."""
        return []

    def memory_mib(self) -> float:
        """The resident memory of the CLI's processes (its sandbox's), in MiB; 0 if unknown."""
        return 0.0

    def resumes(self) -> bool:
        """Whether a restart of the CLI picks its conversation up natively (not through the
        session's handoff): a CLI that cannot is not recycled (`omnikernel.session.idle`)."""
        return True

    def text_ready(self) -> bool:
        """Whether the CLI's next message is already read from its pipe and only streams an
        answer's text: reading it has no side effect (no approval asked, no card shown). The
        session then holds the text it has to commit it with what follows in one transaction
        (`omnikernel.session.turns`); False (the default) commits each event at once."""
        return False

    async def change_model(self, model: str | None) -> None:
        """Use `model` from the next turn on, keeping the conversation. The default restarts
        the CLI, which must then resume its conversation when it starts again."""
        self.ctx.model = model
        await self.close()

    @abc.abstractmethod
    def run_turn(self, prompt: str) -> AsyncIterator[Event]:
        """Send one prompt; yield its events, the last one of kind ``turn_end``.

        If the consumer is cancelled mid-turn, the session then calls `interrupt`."""

    @abc.abstractmethod
    async def interrupt(self) -> list[Event]:
        """End the current turn; return the events the CLI still produced for it."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the CLI and everything it started."""

    @abc.abstractmethod
    def kill_now(self) -> None:
        """Stop the CLI at once, synchronously and from any thread (kernel shutdown)."""
