"""What belongs to the agent and what belongs to a turn, so a stop can end the turn's processes
and keep the agent.

As every turn starts (at its first message) the harness takes a snapshot of its process scope (the sandbox's
cgroup; without a cgroup, the agent's process tree): the sandbox wrappers, the agent CLI and
its helpers, the network relays. Whatever appears in the scope after that was started by the
turn: tool commands, their subprocesses, background jobs and daemons that double-forked or
called setsid (inside bwrap's pid namespace those are reparented to the sandbox's init, so
only the cgroup still ties them to the turn). A stop kills exactly those, and keeps the
relays' per-connection children (the agent's own model connections).

The kill happens with the scope frozen where it can be (cgroup v2): signalled one by one, a
shell whose child died first would otherwise run its next command before its own SIGKILL
arrived (`sleep 4; echo late > late.txt` wrote the file at the stop), and a process could fork
between the listing and the signal. Without a freezer, parents are signalled before children.

Pure bookkeeping over /proc; signals are the only side effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

#: The network relay of `omnikernel.sandbox.bridge`: its forks carry the agent's own
#: connections to the model gateway, never a tool's.
RELAY_COMMANDS = frozenset({"socat"})


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    name: str  # the kernel's short name (comm)
    command: str  # the command line, for saying what was stopped
    zombie: bool


def process_info(pid: int) -> ProcessInfo | None:
    """`pid` as /proc sees it, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or name
    return ProcessInfo(pid, int(fields[1]), name, command, fields[0] in ("Z", "X"))


def descendants(pid: int) -> set[int]:
    """`pid` and every process below it (the scope when there is no cgroup)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := process_info(int(entry))) is not None:
            children.setdefault(info.ppid, []).append(info.pid)
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


@dataclasses.dataclass
class TurnProcesses:
    """The processes of one agent at the start of a turn, and the way to end the turn's own."""

    members: Callable[[], set[int]]
    #: A block in which the scope's processes cannot run; yields whether they are frozen.
    frozen: Callable[[], contextlib.AbstractContextManager[bool]] = lambda: contextlib.nullcontext(
        False
    )
    resident: frozenset[int] = frozenset()

    def snapshot(self) -> None:
        """Call when the turn starts: everything now running belongs to the agent."""
        self.resident = frozenset(self.members())

    def strays(self) -> list[ProcessInfo]:
        """The live processes the turn started (relay forks excepted); none before the
        snapshot (then nothing is known to be the turn's)."""
        found: list[ProcessInfo] = []
        if not self.resident:
            return found
        for pid in self.members() - self.resident:
            info = process_info(pid)
            if info is None or info.zombie:
                continue
            parent = process_info(info.ppid) if info.ppid in self.resident else None
            if parent is not None and parent.name in RELAY_COMMANDS:
                continue  # a relay's fork: the agent's own connection
            found.append(info)
        return found

    async def kill_strays(self, within: float = 0.5) -> list[ProcessInfo]:
        """SIGKILL the turn's processes with the scope frozen, so none of them runs another
        step or forks in between; again while new ones appear (a scope that cannot be frozen),
        for at most `within` seconds; return those killed."""
        killed: dict[int, ProcessInfo] = {}
        deadline = time.monotonic() + within
        while self.strays() and time.monotonic() < deadline:
            with self.frozen():
                for info in parents_first(self.strays()):  # listed again, now frozen
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(info.pid, signal.SIGKILL)
                    killed.setdefault(info.pid, info)
            await asyncio.sleep(0.005)
        return sorted(killed.values(), key=lambda i: i.pid)


def resident_mib(pids: Iterable[int]) -> float:
    """The resident memory of `pids` summed (from /proc/PID/statm), in MiB; gone ones count 0."""
    pages = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def parents_first(processes: Iterable[ProcessInfo]) -> list[ProcessInfo]:
    """`processes` ordered so each comes after its ancestors among them: a parent killed
    first cannot react to its child's death."""
    by_pid = {info.pid: info for info in processes}

    def depth(info: ProcessInfo) -> int:
        steps, seen = 0, {info.pid}
        while info.ppid in by_pid and info.ppid not in seen:
            info = by_pid[info.ppid]
            seen.add(info.pid)
            steps += 1
        return steps

    return sorted(by_pid.values(), key=depth)


def describe_killed(killed: list[ProcessInfo], limit: int = 4) -> str:
    """'3 processes (sleep 30, sh -c ..., sleep 4)' for a notice."""
    names = [i.command if len(i.command) <= 60 else i.command[:57] + "..." for i in killed]
    shown = ", ".join(names[:limit]) + (
        f", and {len(names) - limit} more" if len(names) > limit else ""
    )
    return f"{len(killed)} process{'es' * (len(killed) != 1)} ({shown})"
