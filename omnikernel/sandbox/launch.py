"""Choosing a sandbox backend and starting a process inside it.

`auto` takes the first backend (bubblewrap, then firejail) whose quick self-test passes; the
result is cached per process. With no working backend the start fails closed with the exact
install command; running unsandboxed is only ever an explicit choice ("off"). A backend that
cannot start one particular agent (a path firejail cannot name, an argument too long for it)
says so in the cell with its own words, the setting that led there and the other backend to
switch to (`SandboxStartError`, `SandboxedProcess.start_failure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from omnikernel.proc.process import LINE_LIMIT, HarnessProcess
from omnikernel.sandbox import bwrap, firejail
from omnikernel.sandbox.bridge import Bridge, inside_command, socket_path
from omnikernel.sandbox.cgroup import CGroup
from omnikernel.sandbox.egress import EgressProxy, inside_port, proxy_env
from omnikernel.sandbox.exposed import listening_sockets, root_only_files
from omnikernel.sandbox.rundir import RunDir
from omnikernel.sandbox.spec import Mount, SandboxSpec, home_dirs, plan, within

if TYPE_CHECKING:
    from omnikernel.sandbox.broker import Broker


class Backend(Protocol):
    """What a backend module (`bwrap`, `firejail`) provides."""

    name: str
    #: The program it runs, and how to install it.
    binary: str
    install: str

    def command(
        self,
        binary: str,
        argv: list[str],
        workdir: Path,
        mounts: list[Mount],
        run: RunDir,
        overlays: tuple[tuple[Path, Path], ...] = (),
        /,
    ) -> list[str]: ...


BACKENDS: dict[str, Backend] = {"bwrap": bwrap, "firejail": firejail}
CHOICES = ("auto", *BACKENDS, "off")
INSTALL_ALL = "apt-get install -y --no-install-recommends bubblewrap firejail socat"


class SandboxUnavailableError(RuntimeError):
    """No sandbox backend works here; the message says how to get one."""


class SandboxStartError(SandboxUnavailableError):
    """This backend cannot start this agent; the message says why and what to do."""


#: What the self-test runs in the sandbox, and what stands in for the agent when a failed
#: start is checked (`SandboxedProcess.start_failure`).
TRUE = "/bin/true"


def switch_hint(backend: str) -> str:
    """How to run agents under the other backend instead."""
    other = next(n for n in BACKENDS if n != backend)
    return f"`%sandbox {other}` (c.OmniKernel.sandbox = '{other}') runs agents under {other}."


def origin(path: Path, spec: SandboxSpec) -> str:
    """Which setting makes the sandbox name `path` (or a folder on the way to it)."""

    def near(root: str | Path) -> bool:
        return within(path, Path(root)) or within(Path(root), path)

    if near(spec.workdir):
        return f"the notebook's folder ({spec.workdir})"
    if found := next((w for w in spec.writable if near(w)), None):
        return f"the agent's private state dir ({found})"
    path_env = spec.env.get("PATH", "").split(os.pathsep)
    if entry := next((e for e in path_env if e and near(os.path.realpath(e))), None):
        return f"a directory on the agent's PATH ({entry})"
    if found := next((r for r in spec.readable if near(r)), None):
        return (
            f"a path agents read ({found}): the agent CLI's install or interpreter, or one "
            "allowed with `%sandbox read` / c.OmniKernel.sandbox_readable"
        )
    return "a path the sandbox itself uses"


def binary_of(backend: Backend) -> str | None:
    return shutil.which(backend.binary)


@functools.cache
def self_test(name: str) -> str:
    """ "" if backend `name` runs `true` in a sandbox here, else why not."""
    backend = BACKENDS[name]
    path = binary_of(backend)
    if path is None:
        return f"{backend.binary} is not installed ({backend.install})"
    run = RunDir.create()
    try:
        with tempfile.TemporaryDirectory() as work:
            spec = SandboxSpec(
                workdir=Path(work), env={"PATH": "/usr/bin:/bin"}, closed=home_dirs()
            )
            try:
                done = subprocess.run(
                    sandbox_command(backend, path, [TRUE], spec, run),
                    cwd=work,
                    env=spec.env,
                    capture_output=True,
                    text=True,
                    timeout=20,
                )
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                return f"{backend.binary} failed its self-test: {exc}"
    finally:
        run.remove()
    if done.returncode != 0:
        return f"{backend.binary} failed its self-test: {done.stderr.strip()[:300]}"
    return ""


def resolve(choice: str) -> Backend | None:
    """The backend for `choice` ("auto", "bwrap", "firejail"), or None for "off"."""
    if choice == "off":
        return None
    if choice not in CHOICES:
        raise SandboxUnavailableError(
            f"unknown sandbox {choice!r}; choose one of {', '.join(CHOICES)}"
        )
    names = list(BACKENDS) if choice == "auto" else [choice]
    problems = []
    for name in names:
        problem = self_test(name)
        if not problem:
            return BACKENDS[name]
        problems.append(problem)
    raise SandboxUnavailableError(
        "No working sandbox, so the agent was not started: "
        + "; ".join(problems)
        + f". Install one with: {INSTALL_ALL} (`make system-deps` does it), or run without a "
        "sandbox explicitly with `%sandbox off` (c.OmniKernel.sandbox = 'off')."
    )


def sandbox_command(
    backend: Backend, path: str, argv: list[str], spec: SandboxSpec, run: RunDir
) -> list[str]:
    """The backend's command line for `spec`: placeholders made, root-only files and every
    other unix socket masked (see `exposed`). `SandboxStartError` if the backend cannot
    express the plan (firejail and a path it cannot name)."""
    run.place(spec.read_only)
    keep = (spec.bridge_dir,) if spec.bridge_dir else ()
    masked = (*root_only_files(), *listening_sockets(keep))
    try:
        return backend.command(path, argv, spec.workdir, plan(spec, masked), run, spec.overlays)
    except firejail.UnnamablePath as exc:
        raise SandboxStartError(
            f"The {backend.name} sandbox cannot start the agent: {exc}. The path is in "
            f"{origin(exc.path, spec)}. Rename it, or switch: {switch_hint(backend.name)}"
        ) from None


class SandboxedProcess(HarnessProcess):
    """A harness process inside a sandbox; stopping it stops its whole cgroup and removes what
    it left on the host (its run dir: bridge sockets, placeholders)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        argv: list[str],
        backend: str,
        cgroup: CGroup | None,
        bridge: Bridge | None,
        egress: EgressProxy | None = None,
        run: RunDir | None = None,
        check: tuple[list[str], SandboxSpec] | None = None,
    ):
        super().__init__(process, argv)
        self.backend = backend
        self.cgroup = cgroup
        self.bridge = bridge
        self.egress = egress
        self.run = run
        #: The sandbox's command line with `TRUE` in the agent's place, and its spec.
        self.check = check

    async def start_failure(self) -> str | None:
        """Why the agent did not start, if the sandbox refused to start it: the same sandbox
        (same profile, arguments, environment and folder) is started again with `true` in the
        agent's place; if that fails too, the backend's own words, what they blame and the
        other backend. Meant for an agent that exited with an error; None if the sandbox
        starts (the agent itself failed) or can no longer be checked (stopped already)."""
        if self.check is None or self.run is None:
            return None
        command, spec = self.check
        try:
            probe = await asyncio.create_subprocess_exec(
                *command,
                cwd=str(spec.workdir),
                env=dict(spec.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError:
            return None
        try:
            _, err = await asyncio.wait_for(probe.communicate(), 20)
        except TimeoutError:
            probe.kill()
            await probe.wait()
            return None
        if probe.returncode == 0:
            return None
        said = err.decode(errors="replace").strip()[-1500:] or f"exit code {probe.returncode}"
        blames, path = "", None
        if (cause := getattr(BACKENDS[self.backend], "cause", None)) is not None:
            blames, path = cause(said, command, self.run)
        if path is not None:
            blames += f" That comes from {origin(path, spec)}."
        return (
            f"{self.backend} said:\n{said}\n"
            + (f"{blames.strip()}\n" if blames else "")
            + switch_hint(self.backend)
        )

    def members(self) -> set[int]:
        """Everything in the sandbox's cgroup, orphans and setsid'd daemons included (they left
        the process tree, not the cgroup); the process tree when there is no cgroup."""
        return self.cgroup.pids() if self.cgroup is not None else super().members()

    def frozen(self) -> contextlib.AbstractContextManager[bool]:
        """The sandbox's cgroup, frozen (see `CGroup.frozen`)."""
        return self.cgroup.frozen() if self.cgroup is not None else super().frozen()

    async def kill(self, grace: float = 2.0) -> None:
        await super().kill(grace)
        self._kill_cgroup()
        if self.egress is not None:
            await self.egress.close()  # first: the bridge then removes its emptied directory
        if self.bridge is not None:
            await self.bridge.close()
        self._remove_run_dir()

    def kill_now(self) -> None:
        super().kill_now()
        self._kill_cgroup()
        self._remove_run_dir()

    def _remove_run_dir(self) -> None:
        if self.run is not None:
            self.run.remove()
            self.run = None

    def _kill_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()
            self.cgroup = None


async def start_sandboxed(argv: list[str], spec: SandboxSpec, backend: Backend) -> SandboxedProcess:
    path = binary_of(backend)
    if path is None:
        raise SandboxUnavailableError(f"{backend.binary} is not installed: {backend.install}")
    run = RunDir.create()
    try:
        return await _start(argv, spec, backend, path, run)
    except BaseException:
        run.remove()
        raise


def no_core_dumps() -> None:
    """The kernel will hold a brokered credential (and the session CA's key) in its memory: it
    writes no core dump, which would land in its working directory, the notebook's folder the
    agent reads (where the system's core pattern is a plain file name)."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def _broker(spec: SandboxSpec, run: RunDir) -> tuple[Broker | None, SandboxSpec]:
    """The broker for `spec`'s brokered hosts, and the spec that trusts its session CA: the
    hosts allowed, the bundle (system roots + the CA, no key) readable, shown over the system
    bundle and named by the usual variables. The CA lives as long as this agent process."""
    setup = spec.broker
    if setup is None or not setup.hosts:
        return None, spec
    # Imported only for a brokered host: the broker's HTTP parser (h11), git pack reader
    # (dulwich) and the CA's `cryptography` are ~50 ms a kernel start need not pay.
    from omnikernel.sandbox.broker import Broker
    from omnikernel.sandbox.session_ca import SessionCA, system_bundle, trust_env

    no_core_dumps()
    ca = SessionCA.create(setup.names, run.path.name)
    trust = run.path / "trust"
    trust.mkdir(mode=0o755, exist_ok=True)
    bundle = ca.write_bundle(trust / "ca-bundle.pem")
    system = system_bundle()
    broker = Broker(
        dict(setup.hosts),
        ca,
        ask_push=setup.ask_push,
        on_secret=setup.on_secret,
        routes=spec.egress_routes,
    )
    return broker, dataclasses.replace(
        spec,
        allow_hosts=tuple(dict.fromkeys((*spec.allow_hosts, *setup.names))),
        env={**spec.env, **trust_env(bundle)},
        readable=(*spec.readable, trust),
        overlays=(*spec.overlays, *(((bundle, system),) if system is not None else ())),
    )


async def _start(
    argv: list[str], spec: SandboxSpec, backend: Backend, path: str, run: RunDir
) -> SandboxedProcess:
    proxied = bool(spec.allow_hosts) or spec.network_ask is not None or spec.broker is not None
    if (spec.bridged_ports or proxied) and spec.bridge_dir is None:
        # The run dir's: removed with it.
        spec = dataclasses.replace(
            spec, bridge_dir=run.bridge_dir, readable=(*spec.readable, run.bridge_dir)
        )
    relayed = spec.bridged_ports  # the ports the sandbox's relays listen on
    egress = None
    broker, spec = _broker(spec, run)
    if proxied:
        assert spec.bridge_dir is not None
        port = inside_port(spec.bridged_ports)
        # The proxy serves the relay's unix socket itself: it has no TCP port on the host.
        egress = EgressProxy(
            spec.allow_hosts,
            socket_path(spec.bridge_dir, port),
            spec.egress_routes,
            spec.network_ask,
            broker=broker,
        )
        await egress.start()
        spec = dataclasses.replace(spec, env={**spec.env, **proxy_env(port)})
        relayed = (*relayed, port)
    bridge = None
    if spec.bridged_ports:
        assert spec.bridge_dir is not None
        bridge = Bridge(spec.bridge_dir, spec.bridged_ports, spec.bridge_targets)
        await bridge.start()
    inner = inside_command(list(argv), spec.bridge_dir, relayed)
    command = sandbox_command(backend, path, inner, spec, run)
    check = [*command[: len(command) - len(inner)], TRUE, *inner[1:]]
    cgroup = CGroup.create(spec.memory_bytes, spec.pids_max)
    process = await asyncio.create_subprocess_exec(
        *(cgroup.joined(command) if cgroup else command),
        cwd=str(spec.workdir),
        env=dict(spec.env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=LINE_LIMIT,
    )
    return SandboxedProcess(
        process, list(argv), backend.name, cgroup, bridge, egress, run, (check, spec)
    )
