"""Choosing a sandbox backend and starting a process inside it.

`auto` takes the first backend (bubblewrap, then firejail) whose quick self-test passes; the
result is cached per process. With no working backend the start fails closed with the exact
install command; running unsandboxed is only ever an explicit choice ("off").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

from ..process import LINE_LIMIT, HarnessProcess
from . import bwrap, firejail
from .bridge import Bridge, inside_command, socket_path
from .cgroup import CGroup
from .egress import EgressProxy, inside_port, proxy_env
from .exposed import listening_sockets, root_only_files
from .rundir import RunDir
from .spec import SandboxSpec, home_dirs, plan

BACKENDS: dict[str, ModuleType] = {"bwrap": bwrap, "firejail": firejail}
CHOICES = ("auto", *BACKENDS, "off")
INSTALL_ALL = "apt-get install -y --no-install-recommends bubblewrap firejail socat"


class SandboxUnavailableError(RuntimeError):
    """No sandbox backend works here; the message says how to get one."""


def binary_of(backend: ModuleType) -> str | None:
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
            spec = SandboxSpec(workdir=Path(work), env={"PATH": "/usr/bin:/bin"},
                               closed=home_dirs())  # fmt: skip
            try:
                done = subprocess.run(
                    sandbox_command(backend, path, ["/bin/true"], spec, run), cwd=work,
                    env=spec.env, capture_output=True, text=True, timeout=20,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{backend.binary} failed its self-test: {exc}"
    finally:
        run.remove()
    if done.returncode != 0:
        return f"{backend.binary} failed its self-test: {done.stderr.strip()[:300]}"
    return ""


def resolve(choice: str) -> ModuleType | None:
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
    backend: ModuleType, path: str, argv: list[str], spec: SandboxSpec, run: RunDir
) -> list[str]:
    """The backend's command line for `spec`: placeholders made, root-only files and every
    other unix socket masked (see `exposed`)."""
    run.place(spec.read_only)
    keep = (spec.bridge_dir,) if spec.bridge_dir else ()
    masked = (*root_only_files(), *listening_sockets(keep))
    return backend.command(path, argv, spec.workdir, plan(spec, masked), run)


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
    ):
        super().__init__(process, argv)
        self.backend = backend
        self.cgroup = cgroup
        self.bridge = bridge
        self.egress = egress
        self.run = run

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


async def start_sandboxed(
    argv: list[str], spec: SandboxSpec, backend: ModuleType
) -> SandboxedProcess:
    path = binary_of(backend)
    if path is None:
        raise SandboxUnavailableError(f"{backend.binary} is not installed: {backend.install}")
    run = RunDir.create()
    try:
        return await _start(argv, spec, backend, path, run)
    except BaseException:
        run.remove()
        raise


async def _start(
    argv: list[str], spec: SandboxSpec, backend: ModuleType, path: str, run: RunDir
) -> SandboxedProcess:
    if (spec.bridged_ports or spec.allow_hosts) and spec.bridge_dir is None:
        # The run dir's: removed with it.
        spec = dataclasses.replace(
            spec, bridge_dir=run.bridge_dir, readable=(*spec.readable, run.bridge_dir)
        )
    relayed = spec.bridged_ports  # the ports the sandbox's relays listen on
    egress = None
    if spec.allow_hosts:
        assert spec.bridge_dir is not None
        port = inside_port(spec.bridged_ports)
        # The proxy serves the relay's unix socket itself: it has no TCP port on the host.
        egress = EgressProxy(spec.allow_hosts, socket_path(spec.bridge_dir, port))
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
    return SandboxedProcess(process, list(argv), backend.name, cgroup, bridge, egress, run)
