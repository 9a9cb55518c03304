"""What the model gateway knows and decides, apart from serving HTTP: its upstreams, the
secret each harness's path accepts (`issue_secret`, `refusal`), the current session and cell,
spend (`charge`, priced with `price`) against the budget (`budget_refusal`), the usage limits
upstreams report (`saw_limits`), the tape (`record_to`, `replay_from`) and the retry policy
(`backoff`). The request handlers (`handlers`, `calls`) read and update it;
`omnikernel.gateway.server.Gateway` adds where it listens and which handler serves which path.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from omnikernel.gateway import guard
from omnikernel.gateway.cassette import CassettePlayer, CassetteRecorder
from omnikernel.gateway.client import UpstreamClient
from omnikernel.gateway.ledger import Budget, SpendLedger, SpendRecord
from omnikernel.gateway.limits import UsageLimits, read_limits
from omnikernel.gateway.loopback import LoopbackServer
from omnikernel.gateway.meter import TokenUsage
from omnikernel.gateway.pricing import PriceTable
from omnikernel.gateway.upstream import Upstream
from omnikernel.sandbox.rundir import RunDir

#: Where a sandboxed agent finds the gateway: the port its bridge's relay listens on inside the
#: sandbox (its own network namespace; nothing on the host listens there). Any port would do;
#: one drawn per gateway below the ephemeral range rarely meets a port the agent's tools want.
INSIDE_PORTS = range(20000, 32768)


class GatewayState(LoopbackServer):
    """See the module docstring; `omnikernel.gateway.server.Gateway` is the one to start."""

    thread_name = "omnikernel-gateway"

    def __init__(
        self,
        upstreams: dict[str, Upstream],
        *,
        prices: PriceTable | None = None,
        on_spend: Callable[[SpendRecord], None] | None = None,
        ledger: SpendLedger | None = None,
        budget: Budget | None = None,
        tcp: bool = False,
    ):
        # No TCP port until one is asked for (`open_tcp`; `tcp`: at the start).
        super().__init__(port=None)
        self.tcp = tcp
        #: The port a sandboxed agent's URL names (see `omnikernel.gateway.server`).
        self.inside_port = INSIDE_PORTS[secrets.randbelow(len(INSIDE_PORTS))]
        #: The unix socket served once started; only the sandboxes' bridges connect to it.
        self.socket_path: Path | None = None
        self._run: RunDir | None = None  # the run dir holding the socket
        self.upstreams = upstreams  # by wire: "anthropic" | "openai"
        self.prices = prices or PriceTable.load()
        self.on_spend = on_spend
        self.ledger = ledger or SpendLedger()
        self.budget = budget or Budget()
        self.session = ""
        self.cell = ""
        self.recorder: CassetteRecorder | None = None
        self.player: CassettePlayer | None = None
        self.in_flight = 0  # model calls being answered (only the gateway's thread changes it)
        #: Asked before each model call (a policy pause): None to go on, else why not.
        self.hold: Callable[[str], Awaitable[str | None]] | None = None
        self._lock = threading.Lock()
        self._secrets: dict[str, str] = {}  # by harness: the one key its path accepts
        #: By upstream (its label): the usage limits it last reported in response headers
        #: (a plan's windows, an API key's rate limits; see `limits`).
        self.usage_limits: dict[str, UsageLimits] = {}
        #: Bounded retries of a model call the upstream refused for now (429, 5xx, 529) or
        #: left unanswered; only before any byte of an answer reached the harness.
        self.retries = 3
        self.backoff_s = 0.5
        self.max_backoff_s = 8.0
        self.request_timeout_s = 900.0
        #: Streams the model calls' answers (see `omnikernel.gateway.client`).
        self.client = UpstreamClient()

    def backoff(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before attempt `attempt` + 1: the upstream's Retry-After when it gives one,
        else doubling from `backoff_s`; never more than `max_backoff_s`."""
        wait: float = self.backoff_s * 2 ** (attempt - 1)  # int ** int is Any to mypy
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                pass
        return max(0.0, min(wait, self.max_backoff_s))

    # -- who may use it ------------------------------------------------------------------------

    def issue_secret(self, harness: str) -> str:
        """A new secret for `harness`: from now on the only key ``/h/<harness>`` accepts (a
        secret issued before for it stops working). The harness sends it as its API key."""
        secret = guard.new_secret()
        with self._lock:
            self._secrets[harness] = secret
        if self.recorder is not None:
            self.recorder.secrets.append(secret)
        return secret

    def refusal(
        self, method: str, headers: Mapping[str, str], path_args: tuple[str, ...]
    ) -> str | None:
        harness = path_args[0] if path_args else ""
        with self._lock:
            expected = self._secrets.get(harness)
        what = f"harness {harness!r}" if harness else "this path (only /h/<harness>/... is served)"
        return guard.refusal(method, headers, self.authorities, expected, what)

    # -- configuration from the kernel ---------------------------------------------------------

    def set_context(self, session: str = "", cell: str = "") -> None:
        self.session, self.cell = session, cell

    def record_to(self, path: Path) -> None:
        with self._lock:
            secrets = [u.api_key for u in self.upstreams.values() if u.api_key]
            secrets += list(self._secrets.values())
            secrets += [s for u in self.upstreams.values() if u.login for s in u.login.secrets]
        self.recorder, self.player = CassetteRecorder(path, secrets), None

    def replay_from(self, path: Path) -> int:
        self.player, self.recorder = CassettePlayer(path), None
        return len(self.player)

    def stop_tape(self) -> None:
        self.recorder = self.player = None

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self.ledger.total_usd

    @property
    def spent_tokens(self) -> int:
        """Tokens metered so far, as a token budget counts them (`amounts.counted_tokens`)."""
        with self._lock:
            return self.ledger.total_tokens

    def budget_refusal(self, pending_usd: float = 0.0, pending_tokens: int = 0) -> str | None:
        """Why the next call (or the rest of this stream) is refused by the budget, if it is."""
        spent, tokens = self.spent_usd, self.spent_tokens
        if self.budget.exceeded(spent, pending_usd, tokens, pending_tokens):
            return self.budget.message(spent + pending_usd, tokens + pending_tokens)
        return None

    def latest_limits(self) -> dict[str, UsageLimits]:
        """The usage limits each upstream last reported, by upstream label."""
        with self._lock:
            return dict(self.usage_limits)

    def saw_limits(self, harness: str, upstream: Upstream, headers: dict[str, str]) -> None:
        """Keep the usage limits an answer of `upstream` reported (the latest wins)."""
        limits = read_limits(headers, upstream.label)
        if limits is None:
            return
        with self._lock:
            earlier = self.usage_limits.get(upstream.label)
            limits.harnesses = (earlier.harnesses if earlier else set()) | {harness}
            self.usage_limits[upstream.label] = limits

    def price(
        self, vendor: str, usage: TokenUsage, upstream: Upstream | None = None
    ) -> float | None:
        """What `usage` costs: from the price table, except that the offline rehearsal model's
        calls cost nothing ($0), unless its scenario prices them on purpose (`price_as`)."""
        if upstream is not None and upstream.offline:
            if not upstream.price_as:
                return 0.0
            as_vendor, _, as_model = upstream.price_as.rpartition("/")
            priced = dataclasses.replace(usage, model=as_model)
            return self.prices.cost(as_vendor or vendor, priced)
        return self.prices.cost(vendor, usage)

    def charge(
        self,
        harness: str,
        vendor: str,
        usage: TokenUsage,
        estimated: bool,
        cost: float | None = None,
        plan: bool = False,
        upstream: Upstream | None = None,
    ) -> SpendRecord:
        """Meter one exchange: priced from the table unless `cost` is given (replays: $0).
        On a `plan` the price is the API-equivalent figure, not money spent; a call to the
        offline rehearsal `upstream` is a rehearsal record (see `ledger`)."""
        rehearsal = upstream is not None and upstream.offline
        record = SpendRecord.of(
            harness,
            vendor,
            usage,
            self.price(vendor, usage, upstream) if cost is None else cost,
            session=self.session,
            cell=self.cell,
            estimated=estimated,
            plan=plan,
            rehearsal=rehearsal,
            priced_as=upstream.price_as if upstream and rehearsal else "",
        )
        with self._lock:
            self.ledger.add(record)
        if self.on_spend:
            self.on_spend(record)
        return record
