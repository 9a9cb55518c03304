"""The network asks: a connection from an agent's sandbox to a host nothing opened is a decision.

The egress proxy (`omnikernel.sandbox.egress`) tunnels the hosts the notebook allows
(``%sandbox allow``, ``c.OmniKernel.sandbox_allow``) and asks `SessionNetwork.network_asker`'s
callback about every other one. The callback builds an ``approval_request`` of action
``network`` (host, port, and the command that made the connection when a command is running)
and puts it through the one decision function: the policy's ``allow-host`` / ``deny-host``
rules decide, else a person does (the card in the running cell, or the share page). A network
ask is a rule's ask: auto-approval never answers it.

One answer covers the command that asked: pip opens several connections to the same host, and
retries, and each must not ask again; "this session" and "always" (the project policy file)
cover the host from then on. A refusal is kept for the cell, which says after the command's
result which host the wall refused and how to open it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import itertools
import logging
import posixpath
from typing import TYPE_CHECKING, Any

from omnikernel.approvals import decide as approval
from omnikernel.events import Event, EventKind
from omnikernel.policy import hosts
from omnikernel.policy.commands import parse
from omnikernel.sandbox.egress import NetworkAsk

if TYPE_CHECKING:
    from omnikernel.approvals.pending import PendingApprovals
    from omnikernel.policy import Request, Verdict
    from omnikernel.policy.config import Policy
    from omnikernel.store.redact import Redactor

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A connection the wall refused, for the cell's explanation."""

    host: str
    port: int
    why: str
    command: str
    call_id: str


def opening_hint(host: str, port: int) -> str:
    """How a person opens `host`: the host itself, and the presets that hold it."""
    name = host if port in hosts.DEFAULT_PORTS else f"{host}:{port}"
    presets = hosts.presets_of(host, port)
    ways = [f"`%sandbox allow {name}`"]
    if presets:
        ways.append(f"`%sandbox allow {presets[0]}` (all of {presets[0]}'s hosts)")
    ways.append(f"`%policy add allow-host {name}`")
    return "open it with " + ", or ".join(ways)


def refusal_notice(refused: list[Refusal]) -> str:
    """The cell's explanation of the connections the wall refused during a command."""
    lines = []
    for r in dict.fromkeys(refused):
        shown = r.command if len(r.command) <= 80 else r.command[:77] + "..."
        what = f"`{shown}`" if r.command else "the agent"
        lines.append(
            f"The sandbox refused {what}'s connection to {r.host}:{r.port}: {r.why} "
            f"To let agents reach it, {opening_hint(r.host, r.port)}."
        )
    return "\n".join(lines)


def program_of(command: str) -> str:
    """The program a shell line runs (``pip`` for ``cd x && pip install y``), else ""."""
    found = [c for c in parse(command).commands if c.argv and not c.opaque]
    if not found:
        return ""
    argv = found[-1].argv
    name = posixpath.basename(argv[0])
    if name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        return argv[2]  # `python3 -m pip`: pip
    return name


class SessionNetwork:
    """The network part of `AgentSession` (a mixin: its state is set by `_init_network`; the
    names annotated below belong to the other parts)."""

    allow_hosts: tuple[str, ...]
    #: Brokered hosts are allowed hosts too (`omnikernel.sandbox.broker`).
    broker_hosts: dict[str, str]
    auto_approve: bool
    approvals: PendingApprovals
    policy: Policy
    redactor: Redactor
    turn: int
    _activity: dict[str, Any]
    _loop: asyncio.AbstractEventLoop | None
    _cell_context: contextvars.Context | None
    _current_cell: str

    if TYPE_CHECKING:

        def judge(self, request: Request) -> Verdict: ...

        def _record(self, event: Event, harness: str, cell: str) -> Event: ...

        def _remember(self, decision: approval.Decision) -> None: ...

    def _init_network(self) -> None:
        #: Decisions for the running command, by (harness, call id or turn, host).
        self._network_answers: dict[tuple[str, str, str], approval.Decision] = {}
        #: Asks being decided, by the same key: a second connection waits for the first's.
        self._network_asking: dict[tuple[str, str, str], asyncio.Future[approval.Decision]] = {}
        #: Connections refused and not yet explained in the cell, by harness.
        self._refused: dict[str, list[Refusal]] = {}
        #: Asks still waiting for a person, by harness and request id: (host, port, command,
        #: call id). A command that ends first (its client gave up) has them denied.
        self._network_waiting: dict[str, dict[str, tuple[str, int, str, str]]] = {}
        self._network_ids = itertools.count(1)

    def network_asker(self, harness: str) -> NetworkAsk:
        """The egress proxy's callback for `harness`'s sandbox."""

        async def ask(host: str, port: int, allowed: bool) -> str | None:
            return await self._network_ask(harness, host, port, allowed)

        return ask

    def take_refusals(self, harness: str, call_id: str | None = None) -> list[Refusal]:
        """The refusals not yet explained (of one command, or all of them: the turn ended).
        An ask of that command (or turn) still waiting is denied now: nobody waits for it any
        more, and the cell says the command gave up before the answer."""
        waiting = self._network_waiting.get(harness, {})
        for request_id, (host, port, command, asked_by) in list(waiting.items()):
            if call_id is not None and asked_by not in (call_id, ""):
                continue
            waiting.pop(request_id)
            self._refused.setdefault(harness, []).append(
                Refusal(
                    host,
                    port,
                    "the command ended while its network ask waited for an answer (the client's "
                    "own timeout).",
                    command,
                    asked_by,
                )
            )
            self.approvals.answer(
                request_id,
                False,
                by="omnigent",
                source="command ended",
                reason="the command ended before anyone answered",
            )
        kept: list[Refusal] = []
        taken: list[Refusal] = []
        for refusal in self._refused.pop(harness, []):
            (taken if call_id is None or refusal.call_id in (call_id, "") else kept).append(refusal)
        if kept:
            self._refused[harness] = kept
        return taken

    async def _network_ask(
        self, harness: str, host: str, port: int, allowed: bool = False
    ) -> str | None:
        """None to let the connection go, else why not. `allowed`: the sandbox's own rules
        (the allowed and brokered hosts it started with) allow it."""
        from omnikernel.policy import Outcome, request_of

        host = host.lower().rstrip(".")
        probe = {"action": "network", "input": {"host": host, "port": port}}
        denied = self.judge(request_of(probe)).outcome == Outcome.DENY  # deny-host wins
        opened = (*self.allow_hosts, *self.broker_hosts)  # `%sandbox allow`, `%sandbox broker`
        if not denied and (allowed or hosts.allowed(opened, host, port)):
            return None  # `%sandbox allow`, `sandbox_allow`, a brokered host
        activity = self._activity.get(harness)
        loop = self._loop
        tools = list(activity.tools.values()) if activity is not None else []
        running = [c for c in tools if c.get("action") == "exec"] or tools
        if not running or loop is None:
            # No tool call runs: the CLI's own traffic (update checks, telemetry), or a process
            # left behind after its command ended. Refused without asking, so a card always
            # names what an agent's action wanted.
            log.info("refused %s:%s for %s: no tool call was running", host, port, harness)
            return (
                f"Omnigent refused the connection to {host}:{port}: no command of the agent "
                "was running (only a running command's connections are asked about)."
            )
        call = running[-1]
        command = str(call.get("summary") or "")
        call_id = str(call.get("call_id") or "")
        key = (harness, call_id or f"turn-{self.turn}", host)
        decision = self._network_answers.get(key)
        if decision is None:
            asking = self._network_asking.get(key)
            if asking is None:
                answer: concurrent.futures.Future[approval.Decision] = concurrent.futures.Future()
                data = {
                    "request_id": f"net-t{self.turn}-{next(self._network_ids)}",
                    "call_id": "",
                    "tool": program_of(command) or harness,
                    "action": "network",
                    "summary": f"{program_of(command) or harness} wants to reach {host}:{port}"
                    + (f" (`{command}`)" if command else ""),
                    "input": {"host": host, "port": port, "command": command},
                }

                def start() -> None:
                    task = asyncio.ensure_future(self._decide_network(harness, data))
                    task.add_done_callback(
                        lambda t: (
                            answer.set_result(t.result()) if not t.cancelled() else answer.cancel()
                        )
                    )

                loop.call_soon_threadsafe(start, context=self._cell_context)
                asking = self._network_asking[key] = asyncio.wrap_future(answer)
                self._network_waiting.setdefault(harness, {})[str(data["request_id"])] = (
                    host,
                    port,
                    command,
                    call_id,
                )
                # Kept until answered, whoever waits: a client that gives up (pip's read
                # timeout) and retries waits on the same card, never a second one.
                request_id = str(data["request_id"])
                asking.add_done_callback(lambda done: self._settled(key, request_id, done))
            decision = await asyncio.shield(asking)
        if decision.allow:
            return None
        self._refused.setdefault(harness, []).append(
            Refusal(host, port, decision.reason.rstrip(".") + ".", command, call_id)
        )
        return f"the connection to {host}:{port} was refused ({decision.reason.rstrip('.')})"

    def _settled(
        self, key: tuple[str, str, str], request_id: str, done: asyncio.Future[approval.Decision]
    ) -> None:
        self._network_asking.pop(key, None)
        self._network_waiting.get(key[0], {}).pop(request_id, None)
        if not done.cancelled() and done.exception() is None:
            self._network_answers[key] = done.result()

    async def _decide_network(self, harness: str, data: dict[str, Any]) -> approval.Decision:
        """One network request through the decision function, recorded like a harness's."""
        from omnikernel.policy import request_of

        request = Event(EventKind.APPROVAL_REQUEST, data)
        cell = self._current_cell
        self._record(request, harness, cell)
        verdict = self.judge(request_of(data))
        decision = approval.decide(request, verdict, auto_approve=self.auto_approve)
        if decision.needs_person:
            shown = dataclasses.replace(decision, reason=self.redactor.text(decision.reason))
            decision = await self.approvals.ask(data["request_id"], self.redactor.data(data), shown)
            self._remember(decision)
        self._record(
            Event(
                EventKind.APPROVAL_DECISION,
                {
                    "request_id": data["request_id"],
                    "decision": decision.verdict,
                    **decision.event_data(),
                },
            ),
            harness,
            cell,
        )
        return decision
