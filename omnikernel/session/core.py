"""One agent session per notebook: the harnesses it uses, its upstreams, and its event log.

The session owns the order of things. For every prompt it opens a turn, runs it on the chosen
harness, stamps each event with its place (session id, turn, cell, harness) and appends it to
the store before handing it on, so whatever shows an event shows something already durable.
Harness processes are started lazily and kept across turns (that is how a conversation
continues); switching harness keeps the others alive.

It also owns what the store's `Redactor` knows: each credential is taught to it before any
agent can print it (the real API keys when the session starts, a harness's gateway secret and
its upstream's key or plan login before its CLI starts), so the store redacts it from every
event (see `omnikernel.store.redact`). What the session shows without storing it first (an approval
card's request, built from the harness's own data) is redacted here too; an answer's text
deltas pass a `TextStream`, so a value the model spells out over several deltas is caught.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import logging
import os
import queue
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omnikernel import events as ev
from omnikernel.approvals import decide as approval
from omnikernel.approvals.after_restart import (
    Grant,
    ReopenedApprovals,
    denial_note,
    denials_to_tell,
)
from omnikernel.approvals.pending import PendingApprovals
from omnikernel.events import Event, EventKind
from omnikernel.gateway import (
    Budget,
    Gateway,
    PriceTable,
    SpendLedger,
    SpendRecord,
    UsageLimits,
    cross_check,
)
from omnikernel.gateway.credentials import (
    HOW_TO_LOG_IN,
    LOGIN_OF_HARNESS,
    VENDOR_ENDPOINTS,
    Choice,
    Login,
    LoginEndpoints,
    LoginError,
    choose,
    find_login,
)
from omnikernel.gateway.guard import new_secret
from omnikernel.gateway.upstream import (
    PLACEHOLDER_KEY,
    Upstream,
    UpstreamConfig,
    rehearsal_scenario_path,
    resolve,
)
from omnikernel.harnesses import Harness, HarnessContext, HarnessError, discover, harness_class
from omnikernel.harnesses.acp import DEFAULT_ACP_AGENTS, AcpAgent, acp_harness
from omnikernel.policy import Policy, PolicyState, Request, Verdict, fold, observe, request_of
from omnikernel.policy.config import project_policy_path, user_policy_path
from omnikernel.policy.rules import BudgetRule, Outcome, PauseEvery, Rule
from omnikernel.sandbox.spec import explain_refusal
from omnikernel.session.handoff import Turn, build_handoff, review_prompt
from omnikernel.session.identity import Identity
from omnikernel.store.redact import Redactor, TextStream
from omnikernel.store.sessions import SessionStore, StoreUnavailableError
from omnikernel.store.turnlock import TurnLock, lock_path

#: How long a finished turn waits for the gateway to meter its last model call.
SETTLE_S = 3.0
#: The same wait for a stopped turn, which must leave the cell idle within a second; what the
#: gateway meters later is stored with the next turn.
STOP_SETTLE_S = 0.2
#: How long a harness may stay silent mid-turn before the watchdog ends the turn (a tool that
#: runs quietly for longer needs a higher `OmniKernel.watchdog_s`).
DEFAULT_WATCHDOG_S = 600.0

log = logging.getLogger(__name__)


class AgentSession:
    """The meta-layer above the harnesses of one notebook."""

    def __init__(
        self,
        *,
        store: SessionStore,
        session_id: str,
        notebook: str,
        notebook_id: str = "",
        how: str = "",
        cwd: Path,
        state_dir: Path,
        upstream_config: UpstreamConfig,
        harness: str = "claude",
        model: str | None = None,
        harness_paths: Mapping[str, str] | None = None,
        auto_approve: bool = False,
        rehearsal_scenario: str = "",
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        sandbox: str = "auto",
        allow_hosts: tuple[str, ...] = (),
        readable: tuple[Path, ...] = (),
        acp_agents: Mapping[str, AcpAgent] | None = None,
        price_overrides: Mapping[str, Mapping[str, float]] | None = None,
        approval_timeout_s: float = 600.0,
        user_policy: Path | None = None,
        credentials: Mapping[str, str] | None = None,
        login_env: Mapping[str, str] | None = None,
        login_endpoints: LoginEndpoints = VENDOR_ENDPOINTS,
        watchdog_s: float = DEFAULT_WATCHDOG_S,
    ):
        self.store = store
        self.session_id = session_id
        self.notebook = notebook
        #: The notebook's file id from the server (empty when unknown) and how the session
        #: was chosen (see `omnikernel.session.identity`).
        self.notebook_id = notebook_id
        self.how = how
        #: Said once, in the first prompt cell of this kernel (a session new for each run).
        self.first_notice: str | None = None
        self.cwd = cwd
        self._state_root = state_dir
        self.state_dir = state_dir / session_id
        self.upstream_config = upstream_config
        #: The store's redactor, taught every credential this session learns.
        self.redactor: Redactor = store.redactor
        self._learn_configured(upstream_config)
        #: Per harness: auto | api-key | login | offline (`omnikernel.gateway.credentials.choose`).
        self.credentials = dict(credentials or {})
        #: Where plan logins are looked up (the kernel's environment: HOME, CLAUDE_CONFIG_DIR,
        #: CODEX_HOME, CLAUDE_CODE_OAUTH_TOKEN); each login is read once and shared.
        self.login_env = dict(login_env if login_env is not None else {})
        #: Where logins are refreshed (the kernel's settings: the vendors' unless overridden).
        self.login_endpoints = login_endpoints
        self._logins: dict[str, Login | None] = {}
        self._watched_logins: list[Login] = []
        self.harness_paths = dict(harness_paths or {})
        self.auto_approve = auto_approve
        self.rehearsal_scenario = rehearsal_scenario
        self.watchdog_s = watchdog_s
        self.sandbox = sandbox
        self.allow_hosts = tuple(allow_hosts)
        #: Paths agents may read inside the closed home (`%sandbox read`).
        self.readable = tuple(readable)
        #: What agents never see: the store and every session's state (this one's own harness
        #: dir is opened again by the sandbox).
        self.hidden_from_agents = (store.path.parent, state_dir)
        agents = {**DEFAULT_ACP_AGENTS, **(acp_agents or {})}
        self.available = {**discover(), **{n: acp_harness(n, a) for n, a in agents.items()}}
        self.current = harness
        self.models: dict[str, str | None] = {harness: model}
        self.turn = store.last_turn(session_id)
        self._harnesses: dict[str, Harness] = {}
        #: CLIs being started ahead of their first prompt (`prewarm`), by harness.
        self._warming: dict[str, asyncio.Task[None]] = {}
        self._rehearsal: Any = None  # the offline model's FakeModelServer, once started
        #: The session's row is written with its first event, so a kernel that never runs a
        #: prompt leaves no empty session behind.
        self._opened = False
        # Spend lives in the store, so totals and the budget survive a kernel restart.
        self.ledger = self._stored_spend()
        self.budget = Budget(budget_usd, budget_tokens)
        self.prices = PriceTable.load(overrides=price_overrides)
        self._gateway: Gateway | None = None
        #: The last turn each harness's process took part in (in this kernel).
        self._last_turn_of: dict[str, int] = {}
        self._spent: queue.SimpleQueue[SpendRecord] = queue.SimpleQueue()
        #: Harnesses whose CLI version this kernel compared with the pinned one already.
        self._versions_checked: set[str] = set()
        #: What the running turn is doing, by harness (what a stop stops), while it is open.
        self._activity: dict[str, TurnActivity] = {}
        # Control: the rules by level, their state folded from the stored events, and the asks
        # waiting for a person.
        self.policy = Policy(
            user_policy if user_policy is not None else user_policy_path(),
            project_policy_path(notebook, cwd), cwd,
        )  # fmt: skip
        self.policy_state = fold(store.events(session_id), cwd=cwd)
        self.approvals = PendingApprovals(approval_timeout_s)
        #: Approvals a dead kernel left waiting, shown again in this kernel's first cell.
        self.after_restart = ReopenedApprovals(self)
        #: The session's turn lock while this kernel runs a turn (released with its end).
        self._turn_lock: TurnLock | None = None
        #: The one action a person approved after a restart, during the turn carrying it out.
        self._grant: Grant | None = None
        #: A turn whose consumer was cancelled and that nobody stopped yet (`stop_turn`).
        self._cancelled_turn: str | None = None
        #: Decisions made for harness requests, by request id, until their event is recorded.
        self._decisions: dict[str, tuple[approval.Decision, str, list[list[float]]]] = {}
        self._cell_context: contextvars.Context | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pauses: dict[str, asyncio.Task[approval.Decision]] = {}
        self._current_cell = ""
        #: Called on the kernel's loop with each metered call (the spend gauge).
        self.spend_listeners: list[Any] = []

    def _learn_configured(self, config: UpstreamConfig) -> None:
        """Teach the redactor the real keys of the configuration (and a password a base URL
        may carry), whichever harness ends up using them."""
        for name, value in (("ANTHROPIC_API_KEY", config.anthropic_api_key),
                            ("OPENAI_API_KEY", config.openai_api_key)):  # fmt: skip
            self.redactor.add(value, name)
        for name, url in (("ANTHROPIC_BASE_URL", config.anthropic_base_url),
                          ("OPENAI_BASE_URL", config.openai_base_url)):  # fmt: skip
            with contextlib.suppress(ValueError):
                if password := urlsplit(url).password:
                    self.redactor.add(password, f"{name} password")

    def _learn_upstream(self, real: Upstream) -> None:
        """Teach the redactor what a harness's real upstream authenticates with."""
        if real.offline:
            self.redactor.add(real.api_key, "rehearsal model key")
        elif real.api_key != PLACEHOLDER_KEY:
            self.redactor.add(real.api_key, f"{real.wire.upper()}_API_KEY")
        login = real.login
        if login is not None and all(login is not seen for seen in self._watched_logins):
            self._watched_logins.append(login)
            # A login's tokens change when the gateway refreshes them: followed, not copied.
            self.redactor.watch(f"{login.kind} login", lambda: login.secrets)

    def _stored_spend(self) -> SpendLedger:
        return SpendLedger(
            SpendRecord.from_dict(e.data)
            for e in self.store.events(self.session_id, kinds=(EventKind.SPEND,))
        )

    # -- which session -------------------------------------------------------------------------

    def adopt(self, who: Identity) -> None:
        """Continue the session `who` names (the kernel learnt its notebook after starting)."""
        self.notebook, self.notebook_id = who.notebook, who.notebook_id
        self.use_session(who.session_id, who.how)

    def use_session(self, session_id: str, how: str) -> None:
        """Continue `session_id` from now on (`%session`): the harness processes of the old one
        stop, the next prompt starts them again with the new session's history handed over,
        and the notebook (if known) is bound to it for its next kernel."""
        self.kill_now()
        self.session_id = session_id
        self.how = how
        self.first_notice = None
        self.state_dir = self._state_root / session_id
        self.turn = self.store.last_turn(session_id)
        self.ledger = self._stored_spend()
        self._last_turn_of.clear()
        self._opened = False
        # The rules beside the notebook and the policy state are those of the new session.
        self.policy.project_path = project_policy_path(self.notebook, self.cwd)
        self.policy.reload()
        self.policy_state = fold(self.store.events(session_id), cwd=self.cwd)
        if self.notebook_id:
            self.store.bind_notebook(self.notebook_id, session_id, how)

    # -- choosing ------------------------------------------------------------------------------

    def switch(self, name: str, model: str | None = None) -> None:
        """Make `name` the current harness; with `model`, also change its model. The harness
        keeps its conversation: the change applies from its next turn."""
        harness_class(name, self.available)
        self.current = name
        if model is not None:
            self.models[name] = model
        self.models.setdefault(name, None)

    def set_model(self, name: str, model: str | None) -> None:
        """Set `name`'s model (from its next turn) without making it current."""
        harness_class(name, self.available)
        if model is not None:
            self.models[name] = model
        self.models.setdefault(name, None)

    def is_offline(self, name: str) -> bool:
        cls = self.available.get(name)
        if cls is None:
            return False
        try:
            return self.credential_of(name).upstream is None
        except LoginError:
            return False

    def login_for(self, kind: str) -> Login | None:
        """The user's plan login of `kind` (read once per session), or None."""
        if kind not in self._logins:
            self._logins[kind] = find_login(kind, self.login_env, self.login_endpoints)
        return self._logins[kind]

    def credential_of(self, name: str) -> Choice:
        """Which credential harness `name` uses. Raises `LoginError` saying what to do."""
        cls = harness_class(name, self.available)
        kind = LOGIN_OF_HARNESS.get(name)
        preference = self.credentials.get(name, "auto")
        wanted_login = kind is not None and (
            preference == "login"
            or (preference == "auto" and resolve(self.upstream_config, cls.wire) is None)
        )
        login = self.login_for(kind) if wanted_login and kind else None
        return choose(self.upstream_config, name, cls.wire, preference, login, self.login_endpoints)

    def credential_label(self, name: str) -> str:
        """`credential_of` in words, never raising (for `%agents`)."""
        try:
            return self.credential_of(name).label
        except LoginError as exc:
            return f"unusable: {exc}"

    def usage_limits(self) -> dict[str, UsageLimits]:
        """The usage limits each upstream last reported (a plan's windows, a key's rate
        limits), by upstream."""
        return self._gateway.latest_limits() if self._gateway is not None else {}

    @property
    def spent_tokens(self) -> int:
        """Tokens metered this session, as a token budget counts them."""
        return self._gateway.spent_tokens if self._gateway is not None else self.ledger.total_tokens

    def spend_line(self) -> str:
        """The session's spend against its budget and pauses, in each unit one is set in
        ("" when none is): for the cell's footer. Rehearsal calls spend nothing: say so."""
        state = self.live_state()
        parts = []
        for cap in self.budget.limits():
            spent = cap.spent_text(cap.of(state.spent_usd, state.spent_tokens))
            if not cap.is_tokens and self.ledger.only_rehearsal:
                spent = "$0 (rehearsal)"  # the offline model's calls spend nothing
            parts.append(f"session {spent} of {cap.show()} budget")
        for rule in self.rules():
            if isinstance(rule, PauseEvery):
                every = rule.amount
                parts.append(f"next pause at {every.show(rule.next_pause(state))}")
        return " · ".join(parts)

    def model_of(self, name: str) -> str | None:
        return self.models.get(name)

    def upstream_for(self, wire: str, harness: str = "") -> Upstream:
        """The chosen upstream, or the offline rehearsal model (started on first use)."""
        configured = (
            self.credential_of(harness).upstream if harness else resolve(self.upstream_config, wire)
        )
        if configured is not None:
            return configured
        if self._rehearsal is None:
            from omnikernel.rehearsal import (  # offline only
                DEFAULT_SCENARIO,
                FakeModelServer,
                Scenario,
            )

            path = rehearsal_scenario_path(
                Path(self.notebook) if self.notebook.endswith(".ipynb") else None,
                self.rehearsal_scenario,
            )
            scenario = Scenario.load(path or DEFAULT_SCENARIO)
            # It answers only its gateway: the secret goes nowhere else.
            self._rehearsal = FakeModelServer(scenario, api_key=new_secret()).start_in_thread()
        base = self._rehearsal.base_url + ("/v1" if wire == "openai" else "")
        return Upstream(wire=wire, base_url=base, api_key=self._rehearsal.api_key, offline=True,
                        price_as=self._rehearsal.scenario.price_as)  # fmt: skip

    def upstream_label(self, wire: str, harness: str = "") -> str:
        """Where `wire` (or `harness`'s) traffic goes, without starting anything."""
        try:
            configured = (
                self.credential_of(harness).upstream
                if harness in self.available
                else resolve(self.upstream_config, wire)
            )
        except LoginError:
            return "none usable (see the credential)"
        return configured.label if configured else "offline rehearsal model"

    @property
    def gateway(self) -> Gateway:
        """The session's model gateway, started on first use."""
        if self._gateway is None:
            self._gateway = Gateway(
                {}, prices=self.prices, on_spend=self._on_spend, ledger=self.ledger,
                budget=self.budget,
            ).start_in_thread()  # fmt: skip
            self._gateway.hold = self._hold_model_call
        return self._gateway

    def _on_spend(self, record: SpendRecord) -> None:
        """Called on the gateway's thread as each model call is metered."""
        self._spent.put(record)
        loop = self._loop
        for listener in list(self.spend_listeners):
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(listener, record)
            else:
                listener(record)

    def _harness(self, name: str) -> Harness:
        if name not in self._harnesses:
            cls = harness_class(name, self.available)
            try:
                real = self.upstream_for(cls.wire, name)
            except LoginError as exc:
                raise HarnessError(str(exc)) from None
            # Only the gateway sees the real key or login, per harness (a login serves only
            # its own CLI); the redactor knows them, should one ever reach an event.
            self.gateway.upstreams[name] = real
            self._learn_upstream(real)
            if real.login is not None and real.login.path is not None:
                # Where the login lives is masked inside the sandbox, wherever it is (the
                # usual ~/.claude and ~/.codex are closed with the home anyway).
                self.hidden_from_agents = (*self.hidden_from_agents, real.login.path)
            # The agent's API key is a secret of its own, good only for its path on this
            # session's gateway (which puts the real key on what it forwards). On a plan
            # login the agent sends it as its login token: a placeholder. The agent can
            # print it (`env`), so the redactor learns it before the CLI starts. Its URL is the
            # gateway's inside its sandbox, bridged to the gateway's unix socket; started with
            # the sandbox off, it gets the gateway's TCP port, opened only then.
            gateway, wire = self.gateway, cls.wire
            secret = gateway.issue_secret(name)
            self.redactor.add(secret, "gateway secret")
            via_gateway = Upstream(
                wire=wire,
                base_url=gateway.base_url_for(name, wire),
                api_key=secret,
                offline=real.offline,
                login=True if real.login is not None else None,
                socket=gateway.socket_path,
                price_as=real.price_as,
            )
            ctx = HarnessContext(
                cwd=self.cwd,
                state_dir=self.state_dir,
                upstream=via_gateway,
                decide=self._decide,
                model=self.models.get(name),
                binary=self.harness_paths.get(name),
                sandbox=self.sandbox,
                allow_hosts=self.allow_hosts,
                readable=self.readable,
                hidden=self.hidden_from_agents,
                watchdog_s=self.watchdog_s,
                unsandboxed=lambda: dataclasses.replace(
                    via_gateway, base_url=gateway.base_url_for(name, wire, tcp=True), socket=None
                ),
            )
            self._harnesses[name] = cls(ctx)
        return self._harnesses[name]

    def prewarm(self, name: str | None = None) -> None:
        """Start `name`'s (default: the current harness's) CLI inside its sandbox now, in the
        background, so its first prompt does not wait for the CLI to come up. Only the process
        starts (and its handshake): no model request, no event in the store. Errors are left
        for the first prompt to report. A no-op outside a running event loop."""
        name = name or self.current
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if name in self._warming or name not in self.available:
            return

        async def warm() -> None:
            try:
                agent = self._harness(name)
                ensure_started = getattr(agent, "ensure_started", None)
                if ensure_started is not None:
                    await ensure_started()
            except Exception as exc:  # the first prompt starts it again and says what failed
                log.debug("prewarming %s failed: %r", name, exc)

        self._warming[name] = loop.create_task(warm())

    async def _warmed(self, name: str) -> None:
        """Wait for `name`'s prewarm, if one runs (a stop of the turn leaves it running)."""
        task = self._warming.pop(name, None)
        if task is not None and not task.done():
            await asyncio.wait({task})

    # -- control -------------------------------------------------------------------------------

    def rules(self) -> list[Rule]:
        """Every active rule: the policy's levels, and the budget shown as a rule."""
        rules = self.policy.rules()
        rules += [BudgetRule("session", cap) for cap in self.budget.limits()]
        return rules

    def live_state(self) -> PolicyState:
        """The folded state with the spend as the gateway meters it now (not at the turn's end)
        and the approvals the policy files remember."""
        spent = self._gateway.spent_usd if self._gateway is not None else self.ledger.total_usd
        return dataclasses.replace(
            self.policy_state, spent_usd=spent, spent_tokens=self.spent_tokens,
            budget_usd=self.budget.limit_usd, budget_tokens=self.budget.limit_tokens,
            approvals=self.policy_state.approvals | self.policy.approvals,
        )  # fmt: skip

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
            decision = await self.approvals.ask(str(data.get("request_id", "")),
                                              self.redactor.data(data), shown)  # fmt: skip
            self._remember(decision)
        marks = verdict.pause_marks if decision.allow else []
        self._decisions[str(data.get("request_id", ""))] = (decision, str(data.get("call_id", "")),
                                                            marks)  # fmt: skip
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
        verdict = judge(self.policy.rules(), self.live_state(), Request(kind="model_call",
                                                                        tool=harness))  # fmt: skip
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
            task.add_done_callback(lambda t: answer.set_result(t.result()) if not t.cancelled()
                                   else answer.cancel())  # fmt: skip

        self._loop.call_soon_threadsafe(start, context=self._cell_context)
        decision = await asyncio.wrap_future(answer)
        return None if decision.allow else decision.reason

    async def _pause(self, key: str, harness: str, verdict: Verdict) -> approval.Decision:
        """A pause at a model call: an ask of its own, recorded like a harness's."""
        request = Event(EventKind.APPROVAL_REQUEST, {
            "request_id": f"{key}-t{self.turn}", "call_id": "", "tool": "model call",
            "action": "pause", "summary": verdict.reason, "input": {},
        })  # fmt: skip
        cell = self._current_cell
        self._record(request, harness, cell)
        asked = approval.decide(request, verdict, auto_approve=self.auto_approve)
        decision = await self.approvals.ask(request.data["request_id"], request.data, asked)
        self._record(Event(EventKind.APPROVAL_DECISION, {
            "request_id": request.data["request_id"], "decision": decision.verdict,
            **decision.event_data(), "pause_marks": verdict.pause_marks if decision.allow else [],
        }), harness, cell)  # fmt: skip
        return decision

    # -- running -------------------------------------------------------------------------------

    def _record(self, event: Event, harness: str, cell: str) -> Event:
        if not self._opened:
            self.store.open_session(self.session_id, self.notebook)
            self._opened = True
        if event.kind == EventKind.APPROVAL_DECISION:
            made = self._decisions.pop(str(event.data.get("request_id", "")), None)
            if made is not None:  # who decided, from where, by which rules, for what scope
                decision, call_id, marks = made
                event = event.stamped(data={**event.data, **decision.event_data(),
                                            "call_id": call_id, "pause_marks": marks})  # fmt: skip
        stored = self.store.append(
            event.stamped(session_id=self.session_id, harness=harness, turn=self.turn, cell=cell)
        )
        self.policy_state = observe(self.policy_state, stored, self.cwd)
        if stored.kind == EventKind.TURN_END:
            self._end_turn_lock()
        return stored

    def _end_turn_lock(self) -> None:
        """The turn ended (or was given up): the next one, here or in another kernel, may run."""
        self._grant, self._cancelled_turn = None, None
        lock, self._turn_lock = self._turn_lock, None
        if lock is not None:
            lock.release()

    def _waiting_notice(self, holder: str) -> str:
        mine = f"kernel {os.getpid()} "
        who = ("this kernel (an approval answered after a restart runs its own turn)"
               if holder.startswith(mine) else holder or "another kernel")  # fmt: skip
        return (f"Another turn of this session is running, in {who}; waiting for it to end "
                "before this one starts (turns of one session run one at a time, so each is "
                "stored whole). The stop button stops waiting.")  # fmt: skip

    def _close_cut_turns(self) -> list[Event]:
        """Mark interrupted each turn of this session that started and never ended because its
        kernel died (SIGKILL, a crash, the machine going down); say so in this cell. A turn
        another live kernel is still running is left alone."""
        started: dict[int, Event] = {}
        for event in self.store.events(
            self.session_id, kinds=(EventKind.TURN_START, EventKind.TURN_END)
        ):
            if event.kind == EventKind.TURN_START:
                started[event.turn] = event
            else:
                started.pop(event.turn, None)
        out = []
        for turn, start in sorted(started.items()):
            if kernel_alive(str(start.data.get("kernel", ""))):
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start.ts))
            why = (f"Turn {turn} ({start.harness}, started {when}) was cut off: its kernel "
                   f"stopped before the turn ended. It is marked interrupted; what it stored "
                   f"is kept, and the conversation goes on from there.")  # fmt: skip
            end = {"status": "interrupted", "stopped": "the kernel stopped", "cut_off": True}
            for event in (ev.notice(why), Event(EventKind.TURN_END, end)):
                out.append(self.store.append(event.stamped(
                    session_id=self.session_id, harness=start.harness, turn=turn, cell=start.cell
                )))  # fmt: skip
        return out

    def review_prompt(self, reviewer: str, extra: str = "") -> tuple[str, Turn]:
        """The prompt asking `reviewer` to review another harness's latest turn."""
        return review_prompt(self.store.events(self.session_id), reviewer, extra)

    async def run_prompt(
        self, prompt: str, *, harness: str | None = None, cell: str = "", handoff: bool = True,
        on_wait: Callable[[str], None] | None = None, grant: Grant | None = None,
        lock: TurnLock | None = None, origin: dict[str, str] | None = None,
    ) -> AsyncIterator[Event]:  # fmt: skip
        """Run one prompt; yield its events (already stored), the last of kind ``turn_end``.

        With `handoff`, a harness that missed turns of other harnesses gets them first. The
        turn waits for the session's turn lock (`turnlock`; `on_wait` is told why, once), or
        runs under `lock`, already held; `grant` lets one approved action through unasked.
        `origin` (``by``, ``source``) says who sent a prompt that no cell of this notebook
        did (a co-driver's, `omnikernel.kernel.codrive`); it is stored with the turn's start."""
        name = harness or self.current
        if self._cancelled_turn is not None:  # its consumer never stopped it: end it now
            await self.stop_turn(self._cancelled_turn)
        if lock is None:
            lock = TurnLock(lock_path(self.store.path, self.session_id))
            holder = f"kernel {os.getpid()} on {socket.gethostname()} ({name}, {self.notebook})"
            try:
                await lock.acquire(
                    lambda held: on_wait(self._waiting_notice(held)) if on_wait else None, holder
                )
            except OSError as exc:  # the store's folder is not writable: say so, like a write
                raise StoreUnavailableError(lock.path, exc) from exc
        self._turn_lock, self._grant = lock, grant
        try:
            if not self._opened:  # the first event of this kernel: close turns a dead one left
                self.store.open_session(self.session_id, self.notebook)
                self._opened = True
                for event in self._close_cut_turns():
                    if event.kind == EventKind.NOTICE:
                        yield event
                for event in self.after_restart.reopen(cell):
                    yield event
                self.after_restart.present()
            told = denials_to_tell(self.store.events(self.session_id, kinds=(
                EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION, EventKind.TURN_START,
            )), name)  # fmt: skip
            # The store numbers the turn: another kernel may add turns to this session too.
            start = self.store.start_turn(Event(
                EventKind.TURN_START,
                {"prompt": prompt, "model": self.models.get(name), "kernel": KERNEL_MARK}
                | ({"carries_out": grant.request_id} if grant else {})
                | ({"told_denials": [d.data["request_id"] for d in told]} if told else {})
                | (origin or {}),
            ).stamped(session_id=self.session_id, harness=name, cell=cell))  # fmt: skip
        except BaseException:
            self._end_turn_lock()  # no turn started: nothing to end
            raise
        self.turn = start.turn
        activity = self._activity[name] = TurnActivity(self.redactor.stream())
        yield start
        try:
            async for event in self._run_turn(prompt, name, cell, handoff, activity, told):
                yield event
        except Exception:
            self._end_turn_lock()  # a failure the turn could not store: do not hold the session
            raise
        except BaseException:  # cancelled: `stop_turn` stores its end and frees the session
            if name in self._activity:
                self._cancelled_turn = name
            raise

    async def _run_turn(self, prompt: str, name: str, cell: str, handoff: bool,
                        activity: TurnActivity, told: list[Event]) -> AsyncIterator[Event]:  # fmt: skip
        """The turn `run_prompt` started, up to its stored end."""
        started = time.monotonic()
        await self._warmed(name)
        try:
            agent = self._harness(name)
            if agent.ctx.model != self.models.get(name):
                await agent.change_model(self.models.get(name))
            wanted = (self.sandbox, self.allow_hosts, self.readable)
            if (agent.ctx.sandbox, agent.ctx.allow_hosts, agent.ctx.readable) != wanted:
                agent.ctx.sandbox, agent.ctx.allow_hosts, agent.ctx.readable = wanted
                await agent.close()  # restarts inside the new sandbox, resuming its conversation
        except HarnessError as exc:
            self._activity.pop(name, None)
            yield self._record(ev.error(str(exc)), name, cell)
            yield self._record(Event(EventKind.TURN_END, {"status": "error"}), name, cell)
            return
        if self.first_notice:
            yield self._record(ev.notice(self.first_notice), name, cell)
            self.first_notice = None
        if name not in self._versions_checked:
            self._versions_checked.add(name)
            if warning := await version_warning(type(agent), agent.ctx.binary):
                yield self._record(ev.notice(warning), name, cell)
        if agent.ctx.upstream.offline:
            yield self._record(
                ev.notice(
                    "Offline rehearsal model: no model credentials are configured, so a "
                    "scripted model answers. Set ANTHROPIC_API_KEY / OPENAI_API_KEY (or a "
                    "base URL for a compatible gateway) before starting the kernel, or use "
                    "your plan: for Claude, "
                    + HOW_TO_LOG_IN["claude"]
                    + "; for Codex, "
                    + HOW_TO_LOG_IN["chatgpt"]
                    + ". Then restart the kernel."
                ),
                name,
                cell,
            )
        if self.sandbox == "off":
            yield self._record(
                ev.notice(
                    "⚠ SANDBOX OFF: the agent runs with your own permissions: it can read your "
                    "files, secrets included, and reach the network. `%sandbox auto` turns the "
                    "sandbox back on."
                ),
                name,
                cell,
            )
        if told:
            requests = {str(e.data.get("request_id")): e for e in self.store.events(
                self.session_id, kinds=(EventKind.APPROVAL_REQUEST,))}  # fmt: skip
            note = denial_note(told, requests)
            yield self._record(Event(EventKind.NOTICE, {
                "message": f"Told {name} of {len(told)} denial(s) given after the restart.",
                "details": note}), name, cell)  # fmt: skip
            prompt = f"{note}\n\n{prompt}"
        if handoff:
            earlier = (e for e in self.store.events(self.session_id) if e.turn < self.turn)
            since = self._last_turn_of.get(name, 0)
            if (carried := build_handoff(earlier, name, since=since)) is not None:
                yield self._record(
                    Event(EventKind.NOTICE, {
                        "message": f"Handed over to {name}: {carried.summary}.",
                        "details": carried.text,
                    }),
                    name, cell,
                )  # fmt: skip
                prompt = f"{carried.text}\n\n{prompt}"
        self._last_turn_of[name] = self.turn
        self.gateway.set_context(self.session_id, cell)
        # Pauses at model calls are asked from the gateway's thread, shown in this cell.
        self._loop, self._cell_context = asyncio.get_running_loop(), contextvars.copy_context()
        self._current_cell = cell
        reported_cost: float | None = None
        try:
            async for event in agent.run_turn(prompt):
                if event.kind == EventKind.USAGE and agent.ctx.upstream.offline:
                    event = rehearsal_usage(event, agent.ctx.upstream.price_as)
                if event.kind == EventKind.USAGE:
                    reported_cost = event.data.get("cost_usd")
                if event.kind == EventKind.TURN_END:
                    for spend in await self._settle_spend(name, cell):
                        yield spend
                    if event.data.get("status") == "completed" and not agent.ctx.upstream.offline:
                        self._cross_check(name, reported_cost)
                    event = event.stamped(
                        data={
                            **event.data,
                            "duration_s": round(time.monotonic() - started, 3),
                            "sandbox": agent.sandbox_backend,
                            **({"session_spend": line} if (line := self.spend_line()) else {}),
                        }
                    )
                for spend in self._drain_spend(name, cell):
                    yield spend
                activity.see(event)
                if event.kind == EventKind.TURN_END:
                    self._activity.pop(name, None)
                for recorded in self._record_streamed(activity.text, event, name, cell):
                    yield recorded
                if event.kind == EventKind.TOOL_RESULT and agent.sandbox_backend != "off":
                    if why := explain_refusal(str(event.data.get("output", ""))):
                        yield self._record(ev.notice(why), name, cell)
        except HarnessError as exc:
            self._activity.pop(name, None)
            for held in self._record_streamed(activity.text, None, name, cell):
                yield held
            yield self._record(ev.error(str(exc)), name, cell)
            yield self._record(Event(EventKind.TURN_END, {"status": "error"}), name, cell)

    def _record_streamed(self, text: TextStream, event: Event | None, harness: str,
                         cell: str) -> list[Event]:  # fmt: skip
        """Record a turn's event, its text deltas through the turn's `TextStream`: a delta's
        tail that may begin a credential waits for the next delta, and is recorded (redacted
        if it was one) before the next event of another kind, or with None (the turn ends)."""
        if event is not None and event.kind == EventKind.TEXT:
            shown = text.feed(str(event.data.get("text", "")))
            return [self._record(event.stamped(data={**event.data, "text": shown}), harness,
                                 cell)] if shown else []  # fmt: skip
        held = text.flush()
        out = [self._record(ev.text(held), harness, cell)] if held else []
        return out + ([self._record(event, harness, cell)] if event is not None else [])

    def _drain_spend(self, name: str, cell: str) -> list[Event]:
        """Store what the gateway metered since the last event, as ``spend`` events."""
        out = []
        while True:
            try:
                record = self._spent.get_nowait()
            except queue.Empty:
                return out
            out.append(self._record(Event(EventKind.SPEND, record.to_dict()), record.harness, cell))

    async def _settle_spend(self, name: str, cell: str, within: float = SETTLE_S) -> list[Event]:
        """At a turn's end, wait for the gateway to finish metering its last call."""
        deadline = time.monotonic() + within
        # The gateway runs on its own thread and loop: polling its counter is the simple way.
        while self.gateway.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return self._drain_spend(name, cell)

    def _cross_check(self, name: str, reported: float | None) -> None:
        """Log when the harness's own cost disagrees with the gateway's by more than 1%."""
        spends = [e for e in self.store.events(self.session_id, kinds=(EventKind.SPEND,),
                                               turn=self.turn)]  # fmt: skip
        if reported is None or not spends or any(e.data.get("cost_usd") is None for e in spends):
            return
        metered = sum(e.data["cost_usd"] for e in spends)
        if not cross_check(metered, reported):
            log.warning("%s reported $%.6f for turn %d, the gateway metered $%.6f",
                        name, reported, self.turn, metered)  # fmt: skip

    async def stop_turn(self, harness: str | None = None, cell: str = "") -> list[Event]:
        """End the running turn of `harness` (after its consumer was cancelled): the harness
        stops it its own way, then by force (see `JsonLinesHarness.interrupt`). The turn is
        stored as ended once, marked interrupted, saying what was stopped."""
        name = harness or self.current
        started = time.monotonic()
        self._cancelled_turn = None
        activity = self._activity.pop(name, None)
        agent = self._harnesses.get(name)
        if activity is None:
            # The turn ended before the stop came (its end raced the cancel): it is stored as
            # it ended, and the CLI is left alone, since an interrupt it gets between turns is
            # never answered with a turn's end and would hold up the next prompt.
            return await self._settle_spend(name, cell, STOP_SETTLE_S)
        drained = await agent.interrupt() if agent else []
        recorded = [e for event in [*drained, None]
                    for e in self._record_streamed(activity.text, event, name, cell)]  # fmt: skip
        recorded += await self._settle_spend(name, cell, STOP_SETTLE_S)
        end = {"status": "interrupted", "stopped": activity.describe(),
               "stop_s": round(time.monotonic() - started, 3),
               "sandbox": agent.sandbox_backend if agent else ""}  # fmt: skip
        recorded.append(self._record(Event(EventKind.TURN_END, end), name, cell))
        return recorded

    def turn_running(self, harness: str) -> bool:
        """Whether a turn of `harness` is open in this kernel."""
        return harness in self._activity

    async def abandon_turn(self, harness: str | None = None) -> None:
        """Stop the running turn without storing anything more (the store refused a write):
        the harness process stops; the next prompt starts it again, resuming."""
        name = harness or self.current
        self._activity.pop(name, None)
        self._end_turn_lock()
        if (agent := self._harnesses.pop(name, None)) is not None:
            try:
                await agent.interrupt()
            finally:
                await agent.close()

    def turns(self) -> list[dict[str, object]]:
        """One summary row per turn of this session, oldest first (for `%history`)."""
        rows: dict[int, dict[str, object]] = {}
        for event in self.store.events(self.session_id):
            row = rows.setdefault(
                event.turn,
                {"turn": event.turn, "harness": event.harness, "prompt": "", "tools": 0,
                 "status": "running", "tokens": 0, "cost_usd": None, "cell": event.cell},
            )  # fmt: skip
            if event.kind == EventKind.TURN_START:
                row["prompt"] = event.data.get("prompt", "")
            elif event.kind == EventKind.TOOL_CALL:
                row["tools"] = int(row["tools"]) + 1  # type: ignore[call-overload]
            elif event.kind == EventKind.USAGE:
                row["tokens"] = event.data.get("input_tokens", 0) + event.data.get(
                    "output_tokens", 0
                )
                row["cost_usd"] = event.data.get("cost_usd")
                row["rehearsal"] = bool(event.data.get("rehearsal"))
            elif event.kind == EventKind.TURN_END:
                row["status"] = event.data.get("status", "")
        return [rows[k] for k in sorted(rows)]

    async def close(self) -> None:
        for name in list(self._warming):
            await self._warmed(name)
        for agent in self._harnesses.values():
            await agent.close()
        self._harnesses.clear()
        self._stop_services()

    def kill_now(self) -> None:
        """Stop every harness process at once, from any thread (kernel shutdown)."""
        for task in self._warming.values():  # a CLI still coming up stops with the rest
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                task.get_loop().call_soon_threadsafe(task.cancel)
        for agent in self._harnesses.values():
            agent.kill_now()
        self._harnesses.clear()
        self._end_turn_lock()
        self._stop_services()

    def _stop_services(self) -> None:
        if self._gateway is not None:
            self._gateway.stop_thread()
            self._gateway = None
        if self._rehearsal is not None:
            self._rehearsal.stop_thread()
            self._rehearsal = None


class TurnActivity:
    """What a running turn is doing, from its events: deciding an approval, running a tool,
    or waiting on the model (so a stop can say what it stopped)."""

    def __init__(self, text: TextStream):
        self.tools: dict[str, dict[str, Any]] = {}  # call id -> the tool call's data
        self.approval: dict[str, Any] | None = None
        #: The answer's text deltas, redacted as one text (see `AgentSession._record_streamed`).
        self.text = text

    def see(self, event: Event) -> None:
        data = event.data
        if event.kind == EventKind.TOOL_CALL:
            self.tools[data.get("call_id", "")] = data
        elif event.kind == EventKind.TOOL_RESULT:
            self.tools.pop(data.get("call_id", ""), None)
        elif event.kind == EventKind.APPROVAL_REQUEST:
            self.approval = data
        elif event.kind == EventKind.APPROVAL_DECISION:
            self.approval = None

    def describe(self) -> str:
        if self.approval is not None:
            return f"the approval request for {self.approval.get('tool', 'a tool')} " + (
                f"`{self.approval.get('summary', '')}`"
            )
        if self.tools:
            call = list(self.tools.values())[-1]
            what = "the command" if call.get("action") == "exec" else f"the {call.get('tool')} call"
            return f"{what} `{call.get('summary', '')}`"
        return "the model call"


async def version_warning(cls: type[Harness], binary: str | None) -> str | None:
    """A warning when the CLI is not the version omnikernel is tested with (it still runs)."""
    pinned = getattr(cls, "pinned_version", "")
    if not pinned or hasattr(cls, "agent"):  # ACP agents have no common `--version`
        return None
    info = await asyncio.to_thread(cls.probe, binary)
    if not info.installed or pinned in info.version.split() or info.version.startswith(pinned):
        return None
    found = info.version or "an unknown version (`--version` said nothing)"
    return (f"⚠ {cls.display_name} at {info.binary} is {found}; omnikernel is tested with "
            f"{pinned}. It runs anyway, but its protocol may differ: install the tested one "
            f"with `{cls.install_command()}` (or `make harness-clis`).")  # fmt: skip


def rehearsal_usage(event: Event, priced_as: str = "") -> Event:
    """A rehearsal turn's own usage report, without its price: a CLI prices the tokens from
    its own table (Claude Code's ``total_cost_usd``) as if a real model had answered, but
    nothing was spent, so it is $0. When the scenario prices calls on purpose (`priced_as`),
    only the gateway's meter knows that price: the harness's figure is dropped (None)."""
    data = {**event.data, "rehearsal": True, "cost_usd": None if priced_as else 0.0}
    return event.stamped(data=data)


#: Who runs a turn, noted in its start: this host and kernel process (see `kernel_alive`).
KERNEL_MARK = f"{socket.gethostname()}:{os.getpid()}"


def kernel_alive(mark: str) -> bool:
    """Whether the kernel that wrote `mark` still runs (on this host; elsewhere: assume so)."""
    host, _, pid = mark.rpartition(":")
    if not host or not pid.isdigit():
        return False  # written before kernels noted themselves: nobody can still run it
    if host != socket.gethostname():
        return True
    if int(pid) == os.getpid():
        return False  # this kernel has no turn running before its first one
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
