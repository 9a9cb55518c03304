"""Where a session's model traffic goes: credentials, upstreams and the gateway in between.

Each harness reaches its model only through the session's gateway, with a secret of its own
(`gateway.issue_secret`); only the gateway holds the real key or plan login of its upstream.
The redactor learns every credential before any agent can print it: the configured keys when
the session starts, a harness's gateway secret and its upstream's key or login before its CLI
starts. Without usable credentials an upstream is the offline rehearsal model, started on
first use. A plan login is read once per session and shared by the harnesses that use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from omnikernel.gateway.credentials import (
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
from omnikernel.harnesses import Harness, HarnessContext, HarnessError, harness_class
from omnikernel.sandbox.egress import NetworkAsk
from omnikernel.sandbox.upstream import EgressRoutes

if TYPE_CHECKING:
    from omnikernel.approvals import decide as approval
    from omnikernel.events import Event
    from omnikernel.gateway import Budget, Gateway, PriceTable, SpendLedger, SpendRecord
    from omnikernel.harnesses.mcp import McpServer
    from omnikernel.sandbox.broker_setup import BrokerSetup
    from omnikernel.store.redact import Redactor
    from omnikernel.store.sessions import SessionStore


class SessionUpstreams:
    """The credentials and upstream part of `AgentSession` (a mixin: its state is set by
    `_init_upstreams`; the names annotated below belong to the other parts)."""

    store: SessionStore
    notebook: str
    cwd: Path
    state_dir: Path
    models: dict[str, str | None]
    harness_paths: dict[str, str]
    sandbox: str
    allow_hosts: tuple[str, ...]
    egress_routes: EgressRoutes
    broker_hosts: dict[str, str]
    readable: tuple[Path, ...]
    hidden_from_agents: tuple[Path, ...]
    watchdog_s: float
    _harnesses: dict[str, Harness]
    prices: PriceTable
    ledger: SpendLedger
    budget: Budget

    if TYPE_CHECKING:

        @property
        def available(self) -> dict[str, type[Harness]]: ...

        def _on_spend(self, record: SpendRecord) -> None: ...

        async def _hold_model_call(self, harness: str) -> str | None: ...

        def notebook_path(self) -> Path | None: ...

        def mcp_servers_for(self, harness: str) -> tuple[McpServer, ...]: ...

        async def _decide(self, request: Event) -> approval.Decision: ...

        def broker_setup(self) -> BrokerSetup | None: ...
        def network_asker(self, harness: str) -> NetworkAsk: ...

    def _init_upstreams(
        self,
        upstream_config: UpstreamConfig,
        credentials: Mapping[str, str] | None,
        login_env: Mapping[str, str] | None,
        rehearsal_scenario: str,
        login_endpoints: LoginEndpoints = VENDOR_ENDPOINTS,
    ) -> None:
        self.upstream_config = upstream_config
        #: The store's redactor, taught every credential this session learns.
        self.redactor: Redactor = self.store.redactor
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
        self.rehearsal_scenario = rehearsal_scenario
        self._rehearsal: Any = None  # the offline model's FakeModelServer, once started
        self._gateway: Gateway | None = None

    def _learn_configured(self, config: UpstreamConfig) -> None:
        """Teach the redactor the real keys of the configuration (and a password a base URL
        may carry), whichever harness ends up using them."""
        for name, value in (
            ("ANTHROPIC_API_KEY", config.anthropic_api_key),
            ("OPENAI_API_KEY", config.openai_api_key),
            ("GEMINI_API_KEY", config.gemini_api_key),
        ):
            self.redactor.add(value, name)
        for name, url in (
            ("ANTHROPIC_BASE_URL", config.anthropic_base_url),
            ("OPENAI_BASE_URL", config.openai_base_url),
            ("GOOGLE_GEMINI_BASE_URL", config.gemini_base_url),
        ):
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
        return Upstream(
            wire=wire,
            base_url=base,
            api_key=self._rehearsal.api_key,
            offline=True,
            price_as=self._rehearsal.scenario.price_as,
        )

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
            from omnikernel.gateway.server import Gateway  # not at the kernel's start

            self._gateway = Gateway(
                {},
                prices=self.prices,
                on_spend=self._on_spend,
                ledger=self.ledger,
                budget=self.budget,
            ).start_in_thread()
            self._gateway.hold = self._hold_model_call
        return self._gateway

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
                egress_routes=self.egress_routes,
                broker=self.broker_setup(),
                network_ask=self.network_asker(name),
                readable=self.readable,
                hidden=self.hidden_from_agents,
                watchdog_s=self.watchdog_s,
                read_only=tuple(p for p in (self.notebook_path(),) if p is not None),
                mcp_servers=lambda: self.mcp_servers_for(name),
                unsandboxed=lambda: dataclasses.replace(
                    via_gateway, base_url=gateway.base_url_for(name, wire, tcp=True), socket=None
                ),
            )
            self._harnesses[name] = cls(ctx)
        return self._harnesses[name]

    def _stop_services(self) -> None:
        if self._gateway is not None:
            self._gateway.stop_thread()
            self._gateway = None
        if self._rehearsal is not None:
            self._rehearsal.stop_thread()
            self._rehearsal = None
