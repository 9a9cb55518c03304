"""The process type every harness runs as, and how it is stopped.

A harness process runs in its own process group (session), so stopping it stops everything it
started that stayed in the group; the sandbox (`omnikernel.sandbox`) builds on this type and
adds stronger guarantees (orphans, cgroups). Nothing here knows about sandboxes: `spawn` chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from omnikernel.proc.turnstop import descendants

#: stream-json lines carry whole file contents and tool outputs: allow large lines.
LINE_LIMIT = 64 * 1024 * 1024


class HarnessProcess:
    """A running harness CLI with line-oriented stdio pipes."""

    def __init__(self, process: asyncio.subprocess.Process, argv: Sequence[str]):
        self.process = process
        self.argv = list(argv)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def stdin(self) -> asyncio.StreamWriter:
        assert self.process.stdin is not None
        return self.process.stdin

    @property
    def stdout(self) -> asyncio.StreamReader:
        assert self.process.stdout is not None
        return self.process.stdout

    @property
    def stderr(self) -> asyncio.StreamReader:
        assert self.process.stderr is not None
        return self.process.stderr

    def members(self) -> set[int]:
        """The processes that belong to this harness: its whole process tree."""
        return descendants(self.pid) if self.returncode is None else set()

    def frozen(self) -> contextlib.AbstractContextManager[bool]:
        """A block in which the harness's processes cannot run (False: no way to freeze them
        here, so they keep running)."""
        return contextlib.nullcontext(False)

    async def wait(self) -> int:
        return await self.process.wait()

    async def start_failure(self) -> str | None:
        """Why the process never started, if what wraps it refused to start it (a sandbox
        says so, see `SandboxedProcess`); None: it started, and any error is its own."""
        return None

    async def kill(self, grace: float = 2.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
        if self.process.returncode is None:
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                pass
        # Children that ignored SIGTERM or outlived the leader still share its group.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self.process.wait()

    def kill_now(self) -> None:
        """Stop the whole process group at once, from any thread or event loop (shutdown)."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


async def start_process(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> HarnessProcess:
    """Start `argv` unsandboxed with exactly `env`, in its own process group."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=dict(env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=LINE_LIMIT,
    )
    return HarnessProcess(process, argv)
