"""What every CLI driven over JSON lines on stdio shares: one long-lived process, messages in
and out, its last words kept for errors, and the events when it dies.

Subclasses give the command line (`command`), the environment (`environment`), what to do
once the process is up (`on_started`, e.g. a JSON-RPC handshake), the turn protocol and how the
CLI is asked to stop a turn (`wind_down`).

Stopping a turn is shared: the CLI's own mechanism goes first (`wind_down` asks, answers a
pending approval with a denial, and reads the turn's last events until its end), the turn's
processes are killed once it had `COMMAND_GRACE_S` (CLIs stop the command they wait for, but
not what it left in the background), and the caller gets control back by `STOP_DEADLINE_S`.
A CLI still winding down by then keeps its stdout to itself until it is done: the next turn
waits for it (so no late event of the stopped turn leaks into the next cell), and restarts the
CLI, resuming the conversation, if it takes longer than `WIND_DOWN_S`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.harnesses.base import Harness, HarnessContext, HarnessError
from omnikernel.proc.turnstop import ProcessInfo, TurnProcesses, describe_killed, resident_mib
from omnikernel.sandbox.spawn import HarnessProcess

log = logging.getLogger(__name__)

#: How long the CLI's own stop has before the turn's processes are killed.
COMMAND_GRACE_S = 0.2
#: When `interrupt` returns at the latest: the cell must be idle within a second of the stop.
STOP_DEADLINE_S = 0.6
#: How long the next turn waits for a stopped turn still winding down before restarting the CLI.
WIND_DOWN_S = 10.0


class JsonLinesHarness(Harness):
    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._proc: HarnessProcess | None = None
        self._stderr_tail: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None
        #: The agent's own processes at the start of the running turn.
        self._turn_processes: TurnProcesses | None = None
        #: A stopped turn's end, still being read after `interrupt` returned.
        self._winding_down: asyncio.Task[list[Event]] | None = None
        #: The id of the permission request the running turn is deciding, if any.
        self.pending_approval: Any = None
        #: The agent's own processes, as its process's first turn found them: what a later
        #: look tells the agent's background shells apart from (`background_processes`).
        self._agent_processes: TurnProcesses | None = None

    @abc.abstractmethod
    def command(self, binary: str) -> list[str]:
        """The CLI's command line in machine mode."""

    @abc.abstractmethod
    def environment(self) -> dict[str, str]:
        """Exactly what the CLI needs: never the kernel's environment wholesale."""

    async def on_started(self) -> None:
        """Called once the process runs, before the first turn (handshakes go here)."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def ensure_started(self) -> HarnessProcess:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        binary = self.require_binary(self.ctx.binary)
        # Off the loop: the first call starts the kernel's notebook server (its SDK takes a
        # second or two to import) and reads the mcp.toml files.
        await asyncio.to_thread(self.take_mcp_servers)
        self._proc = await self.start_process(self.command(binary), self.environment())
        self.turns_in_process = 0
        self._agent_processes = None
        self._stderr_tail = []
        self._stderr_task = asyncio.create_task(self._collect_stderr(self._proc))
        await self.on_started()
        return self._proc

    async def prepare_turn(self) -> list[Event]:
        """Before each turn: let a stopped turn finish (or restart the CLI), start the CLI, and
        note which processes are the agent's. Returns notices for the new turn."""
        notices = []
        if self._winding_down is not None:
            task, self._winding_down = self._winding_down, None
            try:
                await asyncio.wait_for(task, WIND_DOWN_S)
            except (TimeoutError, HarnessError, OSError) as exc:
                log.warning("%s did not finish a stopped turn: %r", self.name, exc)
                await self.close()
                notices.append(
                    ev.notice(
                        f"{self.display_name} had not finished the stopped turn after {WIND_DOWN_S:.0f}"
                        " s, so it was restarted; the conversation is resumed."
                    )
                )
        self.pending_approval = None
        proc = await self.ensure_started()
        # Noted at the turn's first message, not now: a CLI started just now may still be
        # coming up (the sandbox's init, the relay, the CLI itself are not all there yet), and
        # it speaks before it runs any tool.
        self._turn_processes = TurnProcesses(proc.members, proc.frozen)
        if self._agent_processes is None:  # snapshotted with the turn's, at its first message
            self._agent_processes = self._turn_processes
        self.turns_in_process += 1
        return notices

    def background_processes(self) -> list[ProcessInfo]:
        """The processes in the CLI's scope its first turn did not find there (relay forks
        for its model connections excepted): background jobs and daemons of its turns."""
        if not self.running or self._agent_processes is None:
            return []
        return self._agent_processes.strays()

    def memory_mib(self) -> float:
        """RSS summed over the CLI's scope (the sandbox's cgroup, else its process tree)."""
        if self._proc is None or not self.running:
            return 0.0
        return resident_mib(self._proc.members())

    async def _collect_stderr(self, proc: HarnessProcess) -> None:
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            log.debug("%s stderr: %s", self.name, text)
            self._stderr_tail = (self._stderr_tail + [text])[-20:]

    async def send(self, message: dict[str, Any]) -> None:
        assert self._proc is not None
        self._proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self._proc.stdin.drain()

    #: How the CLI's lines that only stream an answer's text begin (see `text_ready`).
    text_line_prefixes: tuple[bytes, ...] = ()

    def text_ready(self) -> bool:
        """Whether the next complete line in stdout's buffer starts like a text delta's."""
        if not self.text_line_prefixes or self._proc is None:
            return False
        stdout = self._proc.stdout
        return _line_buffered(stdout) and _buffer(stdout).startswith(self.text_line_prefixes)

    async def read(self) -> dict[str, Any] | None:
        """The next JSON object from stdout, or None at end of stream."""
        assert self._proc is not None
        while True:
            line = await self._next_line(self._proc)
            if not line:
                return None
            try:
                message = json.loads(line)
            except json.JSONDecodeError:  # a stray line (a CLI's log, a torn write): skip it
                log.warning("%s: ignored a line that is not JSON: %r", self.name, line[:200])
                continue
            if isinstance(message, dict):
                if self._turn_processes is not None and not self._turn_processes.resident:
                    self._turn_processes.snapshot()
                return message

    async def _next_line(self, proc: HarnessProcess) -> bytes:
        """The next line, or the watchdog's error when the CLI stays silent too long (it is
        stopped then: the next prompt starts it again, resuming the conversation)."""
        limit = self.ctx.watchdog_s
        if not limit or _line_buffered(proc.stdout):  # a line already read: no wait to guard
            return await proc.stdout.readline()
        try:
            # A deadline, not `wait_for`: that wraps each read in a task of its own, a trip
            # through the event loop per line.
            async with asyncio.timeout(limit):
                return await proc.stdout.readline()
        except TimeoutError:
            await self.close()
            raise HarnessError(
                f"{self.display_name} sent nothing for {limit:g} s: the watchdog ended the turn "
                f"and stopped it. Run the cell again to continue (the conversation is resumed); "
                f"raise OmniKernel.watchdog_s (or OMNIKERNEL_WATCHDOG_S) if its tools run "
                f"silently for longer."
            ) from None

    async def _refused_start(self, proc: HarnessProcess) -> str | None:
        """What its sandbox said, if the CLI failed because the sandbox never started it
        (firejail refusing an argument, say): otherwise the CLI's own last words would show,
        naming neither the cause nor a way out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        return await proc.start_failure() if proc.returncode else None

    async def died(self, harness_session: str | None = None) -> AsyncIterator[Event]:
        """The events of a turn whose CLI exited under it."""
        proc = self._proc
        code = await proc.wait() if proc else None
        if self._stderr_task:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stderr_task, 2)
        tail = "\n".join(self._stderr_tail[-8:])
        refused = await self._refused_start(proc) if proc else None
        self._proc = None
        if refused:
            yield ev.error(
                f"{self.display_name} never started: its sandbox refused to start it.", refused
            )
        else:
            yield ev.error(
                f"{self.display_name} exited unexpectedly (exit code {code}).",
                (f"Its last words:\n{tail}\n" if tail else "")
                + "Run the cell again to start it afresh; the conversation is resumed.",
            )
        yield Event(EventKind.TURN_END, {"status": "error", "harness_session": harness_session})

    # -- stopping ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def wind_down(self) -> list[Event]:
        """Ask the CLI to stop the running turn its own way (answering a pending approval with a
        denial first), then read until the turn's end; return what is worth keeping of it."""

    async def interrupt(self) -> list[Event]:
        if not self.running:
            await self.close()  # a CLI that died mid-turn: whatever it left goes with it
            return []
        started = time.monotonic()
        task = asyncio.create_task(self.wind_down())
        self._winding_down = task
        await asyncio.wait({task}, timeout=COMMAND_GRACE_S)
        killed = await self._turn_processes.kill_strays() if self._turn_processes else []
        left = STOP_DEADLINE_S - (time.monotonic() - started)
        await asyncio.wait({task}, timeout=max(0.05, left))
        out = []
        if killed:
            out.append(ev.notice(f"Stopped {describe_killed(killed)} the turn had started."))
        if not task.done():
            log.info("%s is still winding down the stopped turn", self.name)
            return out
        self._winding_down = None
        try:
            return task.result() + out
        except (HarnessError, OSError) as exc:
            log.warning("%s failed to stop its turn: %r", self.name, exc)
        await self.close()  # the next turn starts it again, resuming the conversation
        return [
            *out,
            ev.notice(
                f"{self.display_name} could not stop its turn, so it was "
                "stopped itself; the next prompt resumes the conversation."
            ),
        ]

    def kill_now(self) -> None:
        if self._proc is not None:
            self._proc.kill_now()

    async def close(self) -> None:
        if self._winding_down is not None:
            self._winding_down.cancel()
            self._winding_down = None
        self._turn_processes = self._agent_processes = None
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            await proc.kill()
        if self._stderr_task:
            self._stderr_task.cancel()
            self._stderr_task = None


class JsonRpcHarness(JsonLinesHarness):
    """JSON-RPC 2.0 over those lines (Codex's app server, ACP agents)."""

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._ids = itertools.count(1)

    async def request(self, method: str, params: dict[str, Any]) -> int:
        ident = next(self._ids)
        await self.send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        return ident

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        await self.send(
            {"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})}
        )

    async def respond(self, ident: Any, result: dict[str, Any]) -> None:
        await self.send({"jsonrpc": "2.0", "id": ident, "result": result})

    async def refuse(self, ident: Any, method: str) -> None:
        """Answer a request we do not serve with an error, never with silence."""
        await self.send(
            {
                "jsonrpc": "2.0",
                "id": ident,
                "error": {"code": -32601, "message": f"omnikernel does not serve {method}"},
            }
        )

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request whose answer we wait for outside a turn (handshakes, session setup);
        requests from the agent meanwhile are refused, notifications skipped."""
        ident = await self.request(method, params)
        while (message := await self.read()) is not None:
            if message.get("id") == ident and "method" not in message:
                if "error" in message:
                    detail = (message["error"] or {}).get("message")
                    raise HarnessError(f"{self.display_name} refused {method}: {detail}")
                return dict(message.get("result") or {})
            if "id" in message and message.get("method"):
                await self.refuse(message["id"], message["method"])
        if self._proc is not None and (refused := await self._refused_start(self._proc)):
            raise HarnessError(
                f"{self.display_name} never started: its sandbox refused to start it. {refused}"
            )
        tail = " ".join(self._stderr_tail[-3:])
        raise HarnessError(f"{self.display_name} exited during {method}: {tail}")


def _buffer(stream: asyncio.StreamReader) -> bytearray:
    """What `stream` has read and not handed out yet (asyncio.StreamReader has no public peek;
    read only, never consumed)."""
    buffer = getattr(stream, "_buffer", None)
    return buffer if isinstance(buffer, bytearray) else bytearray()


def _line_buffered(stream: asyncio.StreamReader) -> bool:
    """Whether `readline` on `stream` returns at once: a whole line is already read."""
    return _buffer(stream).find(b"\n") >= 0
