"""The one door through which every harness process is started.

Every agent CLI starts here, so the sandbox wraps all of them in one place and nothing can start
an agent around it. The dependency runs one way: this module chooses between a bare process
(`process`) and a sandboxed one (`sandbox.launch`, which builds on the same process type);
neither imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from omnikernel.proc.process import LINE_LIMIT, HarnessProcess, start_process
from omnikernel.sandbox.launch import Backend, start_sandboxed
from omnikernel.sandbox.spec import SandboxSpec

__all__ = ["LINE_LIMIT", "HarnessProcess", "spawn"]


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    sandbox: SandboxSpec | None = None,
    backend: Backend | None = None,
) -> HarnessProcess:
    """Start a harness CLI with exactly `env` as its environment, in its own process group;
    inside `sandbox`, enforced by `backend` (see `omnikernel.sandbox`), when both are given."""
    if sandbox is not None and backend is not None:
        return await start_sandboxed(list(argv), sandbox, backend)
    return await start_process(argv, cwd=cwd, env=env)
