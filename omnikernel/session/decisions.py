"""How a session decides: the policy's rules, its verdicts, the asks and the pauses.

Every request a harness makes goes through `_decide`: the policy's verdict first, then a
person when the verdict asks one (an approval card), unless the one action a person approved
after a restart (`Grant`) is the one asked for. Each decision is kept by request id until its
``approval_decision`` event is recorded, which then carries who decided and why. The gateway
asks `_hold_model_call`, on its own thread, before each model call; a pause that is due is
asked on the kernel's loop, in the running cell, once however many calls wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import secrets
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnikernel.approvals import decide as approval
from omnikernel.approvals.after_restart import Grant
from omnikernel.approvals.pending import PendingApprovals
from omnikernel.events import Event, EventKind
from omnikernel.policy import Policy, PolicyState, Request, Verdict, fold, observe, request_of
from omnikernel.policy.config import project_policy_path, user_policy_path
from omnikernel.policy.reach_rules import ReadOnlyFile
from omnikernel.policy.rule import Outcome, Rule
from omnikernel.policy.rules import BudgetRule
from omnikernel.sandbox.broker_setup import BrokerSetup

#: Said to an agent that tries to write the open notebook.
OPEN_NOTEBOOK_HINT = (
    ": it is the notebook open in Jupyter, and rewriting its file would fight the live "
    "document. Propose a cell with the notebook server's notebook_insert_cell tool instead "
    "(other notebooks are yours to edit)"
)

if TYPE_CHECKING:
    from omnikernel.gateway import Budget, Gateway, SpendLedger
    from omnikernel.sandbox.git_push import Push
    from omnikernel.store.redact import Redactor
    from omnikernel.store.sessions import SessionStore


class SessionDecisions:
    """The control part of `AgentSession` (a mixin: its state is set by `_init_decisions`;
    the names annotated below belong to the other parts)."""

    store: SessionStore
    session_id: str
    notebook: str
    cwd: Path
    turn: int
    redactor: Redactor
    budget: Budget
    ledger: SpendLedger
    _gateway: Gateway | None
    broker_hosts: dict[str, str]
    current: str

    if TYPE_CHECKING:

        @property
        def spent_tokens(self) -> int: ...

        def _record(self, event: Event, harness: str, cell: str) -> Event: ...

        def notebook_path(self) -> Path | None: ...

    def _init_decisions(
        self, user_policy: Path | None, approval_timeout_s: float, auto_approve: bool
    ) -> None:
        self.auto_approve = auto_approve
        # Control: the rules by level, their state folded from the stored events, and the asks
        # waiting for a person.
        self.policy = Policy(
            user_policy if user_policy is not None else user_policy_path(),
            project_policy_path(self.notebook, self.cwd),
            self.cwd,
        )
        self.policy_state = fold(self.store.events(self.session_id), cwd=self.cwd)
        self.approvals = PendingApprovals(approval_timeout_s)
        #: The one action a person approved after a restart, during the turn carrying it out.
        self._grant: Grant | None = None
        #: Decisions made for harness requests, by request id, until their event is recorded.
        self._decisions: dict[str, tuple[approval.Decision, str, list[list[float | str]]]] = {}
        #: The running cell, its context and the kernel's loop: where a pause at a model call
        #: is asked (set as each turn starts).
        self._cell_context: contextvars.Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pauses: dict[str, asyncio.Task[approval.Decision]] = {}
        self._current_cell = ""
        #: Pushes the broker asked about, to name each one's request.
        self._pushes = 0

    @property
    def running_cell(self) -> str:
        """The id of the cell running (or that last ran) this kernel's turn."""
        return self._current_cell

    def turn_loop(self) -> tuple[asyncio.AbstractEventLoop | None, contextvars.Context | None]:
        """The loop running this kernel's turns and the running cell's context (None before
        the first turn): where a tool call from another thread is decided and run."""
        return self._loop, self._cell_context

    def rules(self) -> list[Rule]:
        """Every active rule: the policy's levels, and the budget shown as a rule."""
        rules = self.policy.rules()
        rules += [BudgetRule("session", cap) for cap in self.budget.limits()]
        notebook = self.notebook_path()
        if notebook is not None:
            rules.append(ReadOnlyFile("default", str(notebook), OPEN_NOTEBOOK_HINT))
        return rules

    def live_state(self) -> PolicyState:
        """The folded state with the spend as the gateway meters it now (not at the turn's end)
        and the approvals the policy files remember."""
        spent = self._gateway.spent_usd if self._gateway is not None else self.ledger.total_usd
        return dataclasses.replace(
            self.policy_state,
            spent_usd=spent,
            spent_tokens=self.spent_tokens,
            budget_usd=self.budget.limit_usd,
            budget_tokens=self.budget.limit_tokens,
            approvals=self.policy_state.approvals | self.policy.approvals,
        )

    def judge(self, request: Request) -> Verdict:
        from omnikernel.policy import judge

        return judge(self.rules(), self.live_state(), request)

    async def _decide(self, request: Event) -> approval.Decision:
        """The decision function harnesses call: the policy's verdict, then a person if it asks."""
        data = request.data
        verdict = self.judge(request_of(data, self.cwd))
        decision = approval.decide(request, verdict, auto_approve=self.auto_approve)
        granted = self._grant.take(data) if decision.needs_person and self._grant else None
        if granted is not None:
            decision = granted
        elif decision.needs_person:
            # The card shows the harness's request before the store has redacted its copy.
            shown = dataclasses.replace(decision, reason=self.redactor.text(decision.reason))
            decision = await self.approvals.ask(
                str(data.get("request_id", "")), self.redactor.data(data), shown
            )
            self._remember(decision)
        marks = verdict.pause_marks if decision.allow else []
        self._decisions[str(data.get("request_id", ""))] = (
            decision,
            str(data.get("call_id", "")),
            marks,
        )
        return decision

    async def decide_tool(
        self, harness: str, tool: str, action: str, summary: str, tool_input: dict[str, Any]
    ) -> approval.Decision:
        """A tool call an MCP server of the kernel's asks about (the ``notebook`` server gates
        its own tools, the same way for every harness), on the kernel's loop, in the running
        cell: the decision function, recorded as a harness's request is, unless the policy
        let a read-only call through silently (as harnesses never ask about those)."""
        request = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": f"mcp-{uuid.uuid4().hex[:12]}",
                "call_id": "",
                "tool": tool,
                "action": action,
                "summary": summary,
                "input": tool_input,
            },
        )
        cell = self._current_cell
        verdict = self.judge(request_of(request.data, self.cwd))
        if verdict.outcome == Outcome.ALLOW and "read-only" in verdict.rules:
            return approval.decide(request, verdict, auto_approve=self.auto_approve)
        self._record(request, harness, cell)
        decision = await self._decide(request)
        self._record(
            Event(
                EventKind.APPROVAL_DECISION,
                {"request_id": request.data["request_id"], "decision": decision.verdict},
            ),
            harness,
            cell,
        )
        return decision

    def took_decision(self, stored: Event, decision: approval.Decision) -> None:
        """A decision stored outside a turn (an approval answered after a restart): the
        policy state and the policy files learn it as they would within one."""
        self.policy_state = observe(self.policy_state, stored, self.cwd)
        self._remember(decision)

    def _remember(self, decision: approval.Decision) -> None:
        if decision.allow and decision.scope == "always" and decision.subject:
            for rule in decision.rules:
                self.policy.remember_always(rule, decision.subject)

    async def _hold_model_call(self, harness: str) -> str | None:
        """The gateway asks this (on its own thread) before each model call: None to go on, or
        why not. A pause that is due waits here for a person, in the running cell."""
        from omnikernel.policy import judge

        # `%budget`'s cap is the gateway's own check (402, its own message); a policy file's
        # `budget` rule refuses the call here.
        verdict = judge(
            self.policy.rules(), self.live_state(), Request(kind="model_call", tool=harness)
        )
        if verdict.outcome == Outcome.DENY:
            return f"Omnigent policy refused this model call: {verdict.reason}"
        if verdict.outcome != Outcome.PAUSE or self._loop is None:
            return None
        answer: concurrent.futures.Future[approval.Decision] = concurrent.futures.Future()

        def start() -> None:
            key = "pause-" + "-".join(
                f"{e if isinstance(e, str) else format(e, 'g')}x{m}".replace(" ", "")
                for e, m in verdict.pause_marks
            )
            task = self._pauses.get(key)
            if task is None or task.done() and not task.result().allow:
                task = self._pauses[key] = asyncio.ensure_future(self._pause(key, harness, verdict))
            task.add_done_callback(
                lambda t: answer.set_result(t.result()) if not t.cancelled() else answer.cancel()
            )

        self._loop.call_soon_threadsafe(start, context=self._cell_context)
        decision = await asyncio.wrap_future(answer)
        return None if decision.allow else decision.reason

    def broker_setup(self) -> BrokerSetup | None:
        """What the sandbox's egress proxy brokers, with this session's hooks (None: nothing)."""
        hosts = self.broker_hosts
        if not hosts:
            return None
        return BrokerSetup(
            tuple(sorted(hosts.items())), ask_push=self._ask_push, on_secret=self._brokered
        )

    def _brokered(self, secret: str, label: str) -> None:
        """A credential the broker found: redacted from everything stored before it is used."""
        self.redactor.add(secret, label)

    async def _ask_push(self, remote: str, default_branch: str, push: Push) -> str | None:
        """The broker read a git push: the policy's verdict, a person when it asks (in the
        running cell), both recorded. None lets the push through; else why not."""
        self._pushes += 1
        call = f"push-t{self.turn}-{self._pushes}-{secrets.token_hex(3)}"
        shown = ", ".join(f"{u.branch} ({u.kind})" for u in push.updates)
        data: dict[str, Any] = {
            "request_id": call,
            "call_id": call,
            "tool": "git push",
            "action": "push",
            "summary": f"to {remote}: {shown}",
            "input": {
                "remote": remote,
                "default_branch": default_branch,
                "updates": [u.data() for u in push.updates],
            },
        }
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._push_decision(data), context=self._cell_context)
        decision = await task
        return None if decision.allow else decision.reason

    async def _push_decision(self, data: dict[str, Any]) -> approval.Decision:
        harness, cell = self.current, self._current_cell
        request = Event(EventKind.APPROVAL_REQUEST, data)
        self._record(request, harness, cell)
        verdict = self.judge(request_of(data, self.cwd))
        decision = approval.decide(request, verdict, auto_approve=self.auto_approve)
        if decision.needs_person:
            decision = await self.approvals.ask(data["request_id"], data, decision)
            self._remember(decision)
        self._record(
            Event(
                EventKind.APPROVAL_DECISION,
                {
                    "request_id": data["request_id"],
                    "call_id": data["call_id"],
                    "decision": decision.verdict,
                    **decision.event_data(),
                },
            ),
            harness,
            cell,
        )
        return decision

    async def _pause(self, key: str, harness: str, verdict: Verdict) -> approval.Decision:
        """A pause at a model call: an ask of its own, recorded like a harness's."""
        request = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": f"{key}-t{self.turn}",
                "call_id": "",
                "tool": "model call",
                "action": "pause",
                "summary": verdict.reason,
                "input": {},
            },
        )
        cell = self._current_cell
        self._record(request, harness, cell)
        asked = approval.decide(request, verdict, auto_approve=self.auto_approve)
        decision = await self.approvals.ask(request.data["request_id"], request.data, asked)
        self._record(
            Event(
                EventKind.APPROVAL_DECISION,
                {
                    "request_id": request.data["request_id"],
                    "decision": decision.verdict,
                    **decision.event_data(),
                    "pause_marks": verdict.pause_marks if decision.allow else [],
                },
            ),
            harness,
            cell,
        )
        return decision
