"""One agent session per notebook: which session it is, the harnesses it uses, and its parts.

`AgentSession` is composed of one part per job, each in its own module:

- `upstreams`: credentials, upstreams and the gateway, and wiring a harness to them;
- `spend`: metered model calls, the budget, the spend gauge's figures;
- `decisions`: the policy, approvals and pauses at model calls;
- `network`: the network asks of the sandbox's egress proxy;
- `turns`: running and stopping turns, and recording their events in order;
- `idle`: stopping a CLI nobody uses, and restarting one that grew, between turns.

This module holds what ties them: which session the notebook continues (a kernel may learn
its notebook after starting, and `%session` may switch to another), the current harness and
each harness's model, and the harness processes, started lazily (or ahead, `prewarm`) and kept
across turns (that is how a conversation continues); switching harness keeps the others alive.

The session also owns what the store's `Redactor` knows: each credential is taught to it
before any agent can print it, so the store redacts it from every event (see
`omnikernel.store.redact`). What the session shows without storing it first (an approval
card's request, built from the harness's own data) is redacted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from omnikernel.approvals.after_restart import ReopenedApprovals
from omnikernel.events import Event, EventKind
from omnikernel.gateway.credentials import VENDOR_ENDPOINTS, LoginEndpoints
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.harnesses import Harness, HarnessError, discover, harness_class
from omnikernel.harnesses.acp import DEFAULT_ACP_AGENTS, AcpAgent, acp_harness
from omnikernel.harnesses.mcp import (
    MCP_FILE,
    McpConfigError,
    McpServer,
    load_servers,
    user_mcp_path,
)
from omnikernel.policy import fold
from omnikernel.policy.config import project_policy_path
from omnikernel.sandbox.upstream import DIRECT, EgressRoutes
from omnikernel.session.decisions import SessionDecisions
from omnikernel.session.identity import Identity
from omnikernel.session.idle import SessionIdle
from omnikernel.session.network import SessionNetwork
from omnikernel.session.spend import SessionSpend
from omnikernel.session.turns import SessionTurns
from omnikernel.session.upstreams import SessionUpstreams
from omnikernel.store.sessions import SessionStore

#: How long a harness may go unused before its CLI is stopped (`omnikernel.session.idle`).
DEFAULT_IDLE_TIMEOUT_S = 300.0
#: After how many turns of one process, or how much memory, a CLI is restarted between turns.
DEFAULT_RECYCLE_AFTER_TURNS = 60
DEFAULT_RECYCLE_AFTER_MIB = 0.0

#: How long a harness may stay silent mid-turn before the watchdog ends the turn (a tool that
#: runs quietly for longer needs a higher `OmniKernel.watchdog_s`).
DEFAULT_WATCHDOG_S = 600.0

log = logging.getLogger(__name__)


def continuing_notice(harness: str) -> str:
    """What the first prompt cell says when the session goes on with its last agent."""
    return (
        f"Continuing with {harness}, the agent of this session's last turn (`%agent NAME` "
        "switches). "
    )


class AgentSession(
    SessionTurns, SessionIdle, SessionDecisions, SessionNetwork, SessionSpend, SessionUpstreams
):
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
        egress_routes: EgressRoutes = DIRECT,
        broker_hosts: Mapping[str, str] | None = None,
        readable: tuple[Path, ...] = (),
        acp_agents: Mapping[str, AcpAgent] | None = None,
        price_overrides: Mapping[str, Mapping[str, float]] | None = None,
        approval_timeout_s: float = 600.0,
        user_policy: Path | None = None,
        credentials: Mapping[str, str] | None = None,
        login_env: Mapping[str, str] | None = None,
        login_endpoints: LoginEndpoints = VENDOR_ENDPOINTS,
        watchdog_s: float = DEFAULT_WATCHDOG_S,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        recycle_after_turns: int = DEFAULT_RECYCLE_AFTER_TURNS,
        recycle_after_mib: float = DEFAULT_RECYCLE_AFTER_MIB,
    ) -> None:
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
        self._init_upstreams(
            upstream_config, credentials, login_env, rehearsal_scenario, login_endpoints
        )
        self.harness_paths = dict(harness_paths or {})
        self.watchdog_s = watchdog_s
        self.sandbox = sandbox
        self.allow_hosts = tuple(allow_hosts)
        self.egress_routes = egress_routes
        #: Brokered hosts (`%sandbox broker`), each with the variable naming its token or "".
        self.broker_hosts: dict[str, str] = dict(broker_hosts or {})
        #: Paths agents may read inside the closed home (`%sandbox read`).
        self.readable = tuple(readable)
        #: What agents never see: the store and every session's state (this one's own harness
        #: dir is opened again by the sandbox).
        self.hidden_from_agents: tuple[Path, ...] = (store.path.parent, state_dir)
        self._acp_agents = {**DEFAULT_ACP_AGENTS, **(acp_agents or {})}
        self.current = harness
        self.models: dict[str, str | None] = {harness: model}
        self.turn = store.last_turn(session_id)
        self._harnesses: dict[str, Harness] = {}
        #: CLIs being started ahead of their first prompt (`prewarm`), by harness.
        self._warming: dict[str, asyncio.Task[None]] = {}
        #: The session's row is written with its first event, so a kernel that never runs a
        #: prompt leaves no empty session behind.
        self._opened = False
        self._init_spend(budget_usd, budget_tokens, price_overrides)
        self._init_turns()
        self._init_idle(idle_timeout_s, recycle_after_turns, recycle_after_mib)
        self._init_decisions(user_policy, approval_timeout_s, auto_approve)
        self._init_network()
        #: Approvals a dead kernel left waiting, shown again in this kernel's first cell.
        self.after_restart = ReopenedApprovals(self)
        #: The kernel's ``notebook`` MCP server as told to a harness (a fresh secret for it),
        #: set by the kernel; None: no such server (a session outside a kernel).
        self.notebook_mcp: Callable[[str], McpServer] | None = None

    @functools.cached_property
    def available(self) -> dict[str, type[Harness]]:
        """The installed harnesses and the configured ACP agents, by name: scanned at the first
        ask (the prewarm, once the kernel is idle), not while the kernel starts (the
        entry-point scan and the harness modules it imports: ~10 ms)."""
        acp = {n: acp_harness(n, a) for n, a in self._acp_agents.items()}
        return {**discover(), **acp}

    # -- the agents' MCP servers and the open notebook -----------------------------------------

    def notebook_path(self) -> Path | None:
        """The open notebook's file, if the session knows it."""
        if not self.notebook.endswith(".ipynb"):
            return None
        return (self.cwd / self.notebook).resolve()

    def mcp_files(self) -> tuple[Path, ...]:
        """The user's mcp.toml, then the notebook's (which wins on a name)."""
        return (user_mcp_path(), project_policy_path(self.notebook, self.cwd).parent / MCP_FILE)

    def mcp_servers_for(self, harness: str) -> tuple[McpServer, ...]:
        """What `harness`'s CLI gets at its start: the kernel's notebook server and the
        user's servers. A bad mcp.toml stops the start with the file's error (HarnessError)."""
        servers = []
        if self.notebook_mcp is not None:
            ours = self.notebook_mcp(harness)
            for value in ours.headers.values():  # the bearer secret: never shown or stored
                self.redactor.add(value.removeprefix("Bearer "), "notebook server secret")
            servers.append(ours)
        try:
            servers += load_servers(self.mcp_files())
        except McpConfigError as exc:
            raise HarnessError(f"{exc}. Fix the file, then run the cell again.") from None
        return tuple(servers)

    # -- which session -------------------------------------------------------------------------

    def adopt(self, who: Identity) -> None:
        """Continue the session `who` names (the kernel learnt its notebook after starting),
        with the agent it used last."""
        self.notebook, self.notebook_id = who.notebook, who.notebook_id
        self.use_session(who.session_id, who.how)
        if (last := self.continue_last_harness()) is not None:
            self.first_notice = continuing_notice(last)

    def continue_last_harness(self) -> str | None:
        """Make the agent of the session's last turn the current one (a notebook goes on with
        the agent it used last, and that is the CLI started ahead); its name if that changed
        the current harness, else None."""
        last = self.last_harness()
        if last is None or last == self.current:
            return None
        model = self._last_start().data.get("model")  # the model it had, if one was chosen
        self.switch(last, model if isinstance(model, str) and model else None)
        return last

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

    def adopt_imported(self, name: str, native_id: str, source: Path) -> bool:
        """After `%session import`: let harness `name` resume the CLI's own session natively
        (`Harness.adopt_session`), so the next prompt needs no handoff. False: it cannot (or
        its CLI is not there), and the imported turns are handed over instead."""
        try:
            agent = self._harness(name)
            adopted = agent.adopt_session(native_id, source)
        except (HarnessError, OSError):
            return False
        if adopted:
            self._last_turn_of[name] = self.turn
        return adopted

    def switch(self, name: str, model: str | None = None) -> None:
        """Make `name` the current harness; with `model`, also change its model. The harness
        keeps its conversation: the change applies from its next turn. The CLI switched away
        from is stopped if it was only started ahead (it never ran a turn)."""
        harness_class(name, self.available)
        if name != self.current:
            self.stop_unused(self.current)
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

    def model_of(self, name: str) -> str | None:
        return self.models.get(name)

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
        if name not in self.available:
            return
        # A start or stop of this CLI still under way (an idle stop, `%agent` away and back)
        # finishes first; a second start of a running CLI is a no-op.
        before = self._warming.get(name)

        async def warm() -> None:
            if before is not None and not before.done():
                await asyncio.wait({before})
            try:
                agent = self._harness(name)
                ensure_started = getattr(agent, "ensure_started", None)
                if ensure_started is not None:
                    await ensure_started()
                    self._used(name)  # its idle period starts now
            except Exception as exc:  # the first prompt starts it again and says what failed
                log.debug("prewarming %s failed: %r", name, exc)

        self._warming[name] = loop.create_task(warm())

    async def _warmed(self, name: str) -> None:
        """Wait for `name`'s prewarm, idle stop or recycle, if one runs (a stop of the turn
        leaves it running)."""
        task = self._warming.pop(name, None)
        if task is not None and not task.done():
            await asyncio.wait({task})

    def last_harness(self) -> str | None:
        """The harness of the session's last turn (None: no turn yet, or it is not here)."""
        harness = self._last_start().harness
        return harness if harness in self.available else None

    def _last_start(self) -> Event:
        """The start of the session's last turn (an empty event when there is none)."""
        if self.turn:
            for start in self.store.events(
                self.session_id, kinds=(EventKind.TURN_START,), turn=self.turn
            ):
                return start
        return Event(EventKind.TURN_START, {})

    async def close(self) -> None:
        self._cancel_idle_timers()
        for name in list(self._warming):
            await self._warmed(name)
        for agent in self._harnesses.values():
            await agent.close()
        self._harnesses.clear()
        self._stop_services()

    def kill_now(self) -> None:
        """Stop every harness process at once, from any thread (kernel shutdown)."""
        self._cancel_idle_timers()
        for task in self._warming.values():  # a CLI still coming up stops with the rest
            with contextlib.suppress(RuntimeError):  # its loop is closed already
                task.get_loop().call_soon_threadsafe(task.cancel)
        for agent in self._harnesses.values():
            agent.kill_now()
        self._harnesses.clear()
        self._end_turn_lock()
        self._stop_services()
