"""The model gateway: every harness's model traffic passes here, one per kernel.

Why one place: spend is measured the same way for every harness (from the wire, priced with
the shipped table), a budget can stop a turn mid-stream, the real API key never reaches an
agent (the gateway swaps in the real credential upstream), and a notebook's traffic can be
recorded and replayed.

Each harness has its own path prefix, ``/h/<harness>``, so spend is attributed to it, and its
own secret (`issue_secret`), which it sends as its API key: since the gateway spends the user's
money, it serves only requests carrying the secret issued for that path, and nothing from a
browser (see `omnikernel.gateway.guard`). The kernel sets the current session and cell with
`set_context`. Streams are forwarded chunk by
chunk as they arrive, never buffered. The gateway runs on its own thread and event loop so a
busy kernel never stalls an agent's stream.

Who can reach it at all: a secret can leak (an agent prints its environment, a shared session
shows it), and a secret alone must not let any local process spend the user's money. So the
gateway serves a unix socket, mode 0600 in a fresh 0700 directory of the user's run dir
(`omnikernel.sandbox.rundir`), and no TCP port: only the user's own processes can open it, and
of those only the sandboxes' bridges are told where it is. A sandboxed agent still gets an
``http://127.0.0.1:PORT`` URL (the CLIs speak HTTP over TCP): PORT is `inside_port`, where the
bridge's relay listens inside the sandbox's own network namespace, and the bridge's host side
forwards to the socket (`omnikernel.sandbox.bridge`). A CLI started with ``%sandbox off`` has no
bridge, so for it (and for tests and benchmarks that call the gateway from the host) the gateway
opens a loopback TCP port as well, on request (`open_tcp`), never otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict

from tornado import httpclient, web
from tornado.netutil import bind_unix_socket

from omnikernel.gateway import guard
from omnikernel.gateway.cassette import (
    CassetteMismatchError,
    CassettePlayer,
    CassetteRecorder,
    Exchange,
)
from omnikernel.gateway.client import UpstreamClient
from omnikernel.gateway.credentials import CLAUDE_OAUTH_BETA, LoginError
from omnikernel.gateway.ledger import Budget, SpendLedger, SpendRecord
from omnikernel.gateway.limits import LIMIT_PREFIXES, UsageLimits, read_limits
from omnikernel.gateway.loopback import GuardedHandler, LoopbackServer
from omnikernel.gateway.meter import (
    GEMINI_WIRES,
    VENDOR_OF_WIRE,
    StreamMeter,
    TokenUsage,
    usage_of_body,
)
from omnikernel.gateway.pricing import PriceTable
from omnikernel.gateway.upstream import Upstream
from omnikernel.gateway.wire import (
    anthropic_conversation,
    anthropic_error,
    chat_conversation,
    gemini_conversation,
    gemini_error,
    openai_error,
    responses_conversation,
)
from omnikernel.policy.amounts import counted_tokens
from omnikernel.sandbox.rundir import RunDir

log = logging.getLogger(__name__)

PROMPT_OF = {
    "messages": anthropic_conversation,
    "responses": responses_conversation,
    "chat/completions": chat_conversation,
    "generateContent": gemini_conversation,
    "streamGenerateContent": gemini_conversation,
}
#: Client headers never forwarded: hop-by-hop, sizes we recompute, and the client's credentials.
DROPPED_HEADERS = {
    "host", "content-length", "connection", "authorization", "x-api-key", "x-goog-api-key",
    "accept-encoding",
    "transfer-encoding", "keep-alive",
}  # fmt: skip
PASSED_BACK_HEADERS = {"content-type", "request-id", "x-request-id", "openai-processing-ms"}
#: Upstream answers worth asking again: rate limits, overload (Anthropic's 529), server errors.
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504, 529}
#: Where a sandboxed agent finds the gateway: the port its bridge's relay listens on inside the
#: sandbox (its own network namespace; nothing on the host listens there). Any port would do;
#: one drawn per gateway below the ephemeral range rarely meets a port the agent's tools want.
INSIDE_PORTS = range(20000, 32768)
SOCKET_NAME = "gateway.sock"


def _error_message(body: list[bytes]) -> str:
    """The vendor's error message from an error body, shortened (it names the upstream's view)."""
    try:
        data = json.loads(b"".join(body))
    except ValueError:
        return b"".join(body)[:200].decode(errors="replace")
    error = data.get("error", data) if isinstance(data, dict) else data
    message = error.get("message", "") if isinstance(error, dict) else str(error)
    return f"({str(message)[:200]})" if message else ""


class BudgetStop(Exception):
    """Raised inside the streaming callback to cut the upstream stream."""


class Gateway(LoopbackServer):
    """See the module docstring."""

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
        #: The port a sandboxed agent's URL names (see the module docstring).
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

    # -- where it listens ----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the unix socket (and the TCP port if `tcp`), on the running loop.

        The socket's directory is a run dir made fresh (``mkdir``, which never follows a link
        planted at its path) with mode 0700 under the user's own 0700 run root; the socket is
        0600. A kernel killed before `stop` leaves it to the next kernel's sweep."""
        run = RunDir.create()
        try:
            path = run.path / SOCKET_NAME
            self.serve([bind_unix_socket(str(path), mode=0o600)])
        except BaseException:
            run.remove()
            raise
        self._run, self.socket_path = run, path
        if self.tcp:
            self.serve(self.bind_tcp())

    async def stop(self) -> None:
        await super().stop()
        await self.client.close()
        if self._run is not None:
            self._run.remove()  # the socket with it
            self._run = self.socket_path = None

    def open_tcp(self) -> int:
        """Listen on a loopback TCP port as well, now (once: later calls return the same port).

        For clients outside every sandbox only: a CLI started with ``%sandbox off`` (it has no
        bridge to the socket), and tests and benchmarks on the host. Every local process of
        every user can connect to that port, so there only the secret and the guard stand
        between a leaked secret and the user's money; a kernel whose agents all run sandboxed
        never opens it. It stays open until the gateway stops (an unsandboxed CLI of the session
        may still be using it when another goes back into a sandbox)."""
        if self._server is None:
            raise RuntimeError("the gateway is not running")
        if self.port is None:
            if self._thread is not None and threading.current_thread() is not self._thread:
                assert self._loop is not None  # the server's loop: it accepts there
                asyncio.run_coroutine_threadsafe(self._open_tcp(), self._loop).result(30)
            else:
                self.serve(self.bind_tcp())
        assert self.port is not None
        return self.port

    async def _open_tcp(self) -> None:
        if self.port is None:
            self.serve(self.bind_tcp())

    @property
    def authorities(self) -> tuple[str, ...]:
        """The ``Host`` an agent sends: the sandbox relay's port, or the TCP port once open."""
        inside = f"127.0.0.1:{self.inside_port}"
        return (inside,) if self.port is None else (inside, f"127.0.0.1:{self.port}")

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

    def base_url_for(self, harness: str, wire: str, *, tcp: bool = False) -> str:
        """The base URL a harness is given instead of its vendor's: inside its sandbox (the
        relay's port, bridged to the socket), or with `tcp`, outside any sandbox (the TCP port,
        opened now if it is not yet: see `open_tcp`)."""
        port = self.open_tcp() if tcp else self.inside_port
        root = f"http://127.0.0.1:{port}/h/{harness}"
        return root + "/v1" if wire == "openai" else root  # Gemini's paths name their version

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

    def app(self) -> web.Application:
        opts = {"gateway": self}
        api = r"/h/([A-Za-z0-9_.-]+)/v1/(messages|responses|chat/completions)"
        gemini = r"/h/([A-Za-z0-9_.-]+)/(v1beta|v1|v1alpha)/models/([A-Za-z0-9_.-]+):(\w+)"
        return web.Application(
            [
                (gemini, GeminiCallHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/v1/messages/count_tokens", PassThroughHandler, opts),
                (api, ModelCallHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/v1/(models.*)", PassThroughHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/?", PingHandler, opts),
                (r"/h/([A-Za-z0-9_.-]+)/.*", NotFoundHandler, opts),
                (r"/.*", NotFoundHandler, opts),  # never served: no secret is issued for it
            ]
        )


class _Status(TypedDict):
    """What a forwarded answer's headers said, as `GatewayHandler.forward` gathers them."""

    code: int
    content_type: str


class GatewayHandler(GuardedHandler):
    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def guarded_by(self) -> Gateway:
        return self.gateway

    #: A Gemini API call's version and model (they are in its path): ``("v1beta", MODEL)``.
    gemini_call: tuple[str, str] = ("", "")

    def upstream_for(self, path: str, harness: str = "") -> tuple[Upstream, str]:
        """The harness's own upstream (it may use a plan login), else its wire's."""
        wire = "anthropic" if path.startswith(("messages", "models")) else "openai"
        if path in GEMINI_WIRES:
            wire = "gemini"
        elif path.startswith("models"):
            wire = "anthropic" if "anthropic" in self.gateway.upstreams else "openai"
        upstream = self.gateway.upstreams.get(harness) or self.gateway.upstreams.get(wire)
        if upstream is None:
            raise web.HTTPError(502, f"no {wire} upstream is configured")
        base = upstream.base_url.rstrip("/")
        if upstream.wire == "gemini":
            version, model = self.gemini_call
            url = f"{base}/{version}/models/{model}:{path}"
        elif upstream.wire == "anthropic":
            url = f"{base}/v1/{path}"
        elif base.endswith("/v1") or not upstream.versioned:
            url = f"{base}/{path}"
        else:
            url = f"{base}/v1/{path}"
        query = self.request.query
        return upstream, url + (f"?{query}" if query else "")

    def known_upstream(self, path: str, harness: str) -> Upstream | None:
        """`upstream_for`'s upstream, or None when none is configured (the call fails later)."""
        try:
            return self.upstream_for(path, harness)[0]
        except web.HTTPError:
            return None

    def unpriced(self, vendor: str, model: str, upstream: Upstream | None) -> bool:
        """Whether calls to `model` have no price (a USD budget cannot be kept): a $0 rehearsal
        has one; a rehearsal priced on purpose has its `price_as` model's."""
        if upstream is not None and upstream.offline:
            if not upstream.price_as:
                return False
            as_vendor, _, model = upstream.price_as.rpartition("/")
            vendor = as_vendor or vendor
        return self.gateway.prices.lookup(vendor, model) is None

    async def upstream_headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {
            k: v for k, v in self.request.headers.get_all() if k.lower() not in DROPPED_HEADERS
        }
        headers["Accept-Encoding"] = "identity"
        if upstream.login is not None:  # a plan login: its token, refreshed when expired
            await upstream.login.access_token()
            headers.update(upstream.login.auth_headers())
            if upstream.login.kind == "claude":
                betas = [
                    b.strip() for b in headers.pop("anthropic-beta", "").split(",") if b.strip()
                ]
                if CLAUDE_OAUTH_BETA not in betas:
                    betas.append(CLAUDE_OAUTH_BETA)
                headers["anthropic-beta"] = ",".join(betas)
        elif upstream.wire == "anthropic":
            headers["x-api-key"] = upstream.api_key
        elif upstream.wire == "gemini":
            headers["x-goog-api-key"] = upstream.api_key
        else:
            headers["Authorization"] = f"Bearer {upstream.api_key}"
        return headers

    async def relay_whole(self, upstream: Upstream, url: str, wire_path: str) -> None:
        """Forward this request to `url` with the upstream's real credential and answer with
        the upstream's answer, whole and unmetered (token counting, model lists); errors in
        the shape of `wire_path`'s format."""
        try:
            headers = await self.upstream_headers(upstream)
        except LoginError as exc:
            self.send_error_body(wire_path, 401, str(exc), "authentication_error")
            return
        request = httpclient.HTTPRequest(
            url,
            method=self.request.method or "GET",
            headers=headers,
            body=self.request.body if self.request.method == "POST" else None,
            request_timeout=60,
            connect_timeout=10,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            self.send_error_body(
                wire_path, 502, f"the model upstream did not answer: {exc}", "api_error"
            )
            return
        self.set_status(response.code if response.code != 599 else 502)
        self.set_header("Content-Type", response.headers.get("Content-Type", "application/json"))
        self.finish(response.body or b"")

    def send_error_body(self, wire_path: str, status: int, message: str, kind: str) -> None:
        shape = (
            anthropic_error
            if wire_path == "messages"
            else gemini_error
            if wire_path in GEMINI_WIRES
            else openai_error
        )
        code, body = shape({"status": status, "type": kind, "message": message})
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class PingHandler(GatewayHandler):
    """Agents probe their base URL. Claude Code sends a key-less ``HEAD`` only to warm its
    connection: it gets 401 like any request without the secret, and carries on."""

    def head(self, *args: str) -> None:
        self.finish()

    def get(self, *args: str) -> None:
        self.finish({"omnikernel_gateway": True})


class NotFoundHandler(GatewayHandler):
    """A path the gateway does not serve (reached only with the right secret)."""

    def prepare(self) -> None:
        super().prepare()
        if not self._finished:
            raise web.HTTPError(404)


class PassThroughHandler(GatewayHandler):
    """Small unmetered calls (token counting, model lists): forwarded whole."""

    async def _forward(self, harness: str, path: str) -> None:
        upstream, url = self.upstream_for(
            path if path.startswith("models") else "messages/count_tokens", harness
        )
        await self.relay_whole(upstream, url, "messages")

    async def post(self, harness: str, path: str = "") -> None:
        await self._forward(harness, path)

    async def get(self, harness: str, path: str = "") -> None:
        await self._forward(harness, path)


class ModelCallHandler(GatewayHandler):
    """A metered model call: budget check, then replay, or forward (and maybe record)."""

    client_gone = False

    def on_connection_close(self) -> None:
        self.client_gone = True

    async def post(self, harness: str, wire_path: str) -> None:
        self.gateway.in_flight += 1
        try:
            await self.answer(harness, wire_path)
        finally:
            self.gateway.in_flight -= 1

    async def answer(self, harness: str, wire_path: str) -> None:
        gateway = self.gateway
        vendor = VENDOR_OF_WIRE[wire_path]
        try:
            body = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError:
            self.send_error_body(
                wire_path, 400, "request body is not JSON", "invalid_request_error"
            )
            return
        prompt = PROMPT_OF[wire_path](body).prompt
        streamed = bool(body.get("stream")) or wire_path == "streamGenerateContent"
        if gateway.hold is not None and (refusal := await gateway.hold(harness)) is not None:
            self.send_error_body(wire_path, 403, refusal, "policy_denied")
            return
        if (refusal := gateway.budget_refusal()) is not None:
            self.send_error_body(wire_path, 402, refusal, "budget_exceeded")
            return
        model = str(body.get("model", "")) or self.gemini_call[1]
        if (
            gateway.budget.limit_usd is not None
            and gateway.player is None
            and self.unpriced(vendor, model, self.known_upstream(wire_path, harness))
        ):
            self.send_error_body(
                wire_path,
                402,
                f"Omnigent cannot keep the ${gateway.budget.limit_usd:.2f} budget: the model "
                f"{model!r} has no price. Add one (c.OmniKernel.prices = {{'{vendor}/{model}': "
                f"{{'input': USD_PER_MTOK, 'output': USD_PER_MTOK}}}}), choose a priced model "
                f"with %agent NAME --model M, or lift the budget with %budget off.",
                "budget_unpriced_model",
            )
            return
        if gateway.player is not None:
            self.replay(harness, wire_path, vendor, prompt, streamed)
            return
        await self.forward(harness, wire_path, vendor, body, prompt, streamed)

    def replay(
        self, harness: str, wire_path: str, vendor: str, prompt: str, streamed: bool
    ) -> None:
        assert self.gateway.player is not None
        try:
            exchange = self.gateway.player.answer(harness, wire_path, prompt)
        except CassetteMismatchError as exc:
            self.send_error_body(wire_path, 400, str(exc), "invalid_request_error")
            return
        self.set_status(exchange.status)
        self.set_header("Content-Type", exchange.content_type)
        meter = StreamMeter(wire_path, exchange.model)
        for chunk in exchange.chunks:
            self.write(chunk.encode())
            meter.feed(chunk.encode())
        self.finish()
        usage = meter.usage
        if not exchange.streamed and exchange.status == 200:
            usage = usage_of_body(wire_path, json.loads("".join(exchange.chunks)))
        if exchange.status == 200:
            # A replay costs nothing: record its tokens, priced at $0.
            self.gateway.charge(harness, vendor, usage, estimated=False, cost=0.0)

    async def forward(
        self,
        harness: str,
        wire_path: str,
        vendor: str,
        body: dict[str, Any],
        prompt: str,
        streamed: bool,
        retried: bool = False,
    ) -> None:
        gateway = self.gateway
        upstream, url = self.upstream_for(wire_path, harness)
        try:
            headers = await self.upstream_headers(upstream)
        except LoginError as exc:
            self.send_error_body(wire_path, 401, str(exc), "authentication_error")
            return
        sent_token = upstream.login.token if upstream.login is not None else ""
        # A plan login answered 401 gets one refresh and one retry: hold that answer back.
        may_refresh = upstream.login is not None and not retried
        meter = StreamMeter(wire_path, str(body.get("model", "")) or self.gemini_call[1])
        chunks: list[bytes] = []
        status: _Status = {"code": 0, "content_type": "application/json"}
        cut: list[str] = []
        #: An attempt whose answer may still be retried or refreshed keeps it here, unsent.
        held: list[bytes] = []
        retry_after: list[str] = []
        attempt = {"n": 1}
        #: This attempt's usage-limit headers, kept once its header block has ended.
        limit_headers: dict[str, str] = {}

        def withheld() -> bool:
            """This attempt's answer may never reach the client: a retry or a refresh follows."""
            return status["code"] in RETRIED_STATUSES or (status["code"] == 401 and may_refresh)

        def on_header(line: str) -> None:
            if line.startswith("HTTP/"):
                status["code"] = int(line.split()[1])
                limit_headers.clear()
                return
            if not line.strip():  # the end of the header block
                if limit_headers and not upstream.offline:
                    gateway.saw_limits(harness, upstream, dict(limit_headers))
                return
            if ":" in line:
                name, value = line.split(":", 1)
                if name.strip().lower().startswith(LIMIT_PREFIXES):
                    limit_headers[name.strip().lower()] = value.strip()
                if name.strip().lower() == "retry-after":
                    retry_after[:] = [value.strip()]
                if withheld():
                    return  # this answer may never reach the client
                if name.strip().lower() in PASSED_BACK_HEADERS:
                    self.set_header(name.strip(), value.strip())
                    if name.strip().lower() == "content-type":
                        status["content_type"] = value.strip()

        def on_chunk(chunk: bytes) -> None:
            if self.client_gone:
                raise BudgetStop("the client went away")  # stop paying for an unread stream
            if withheld():
                held.append(chunk)
                return
            self.set_status(status["code"] or 200)
            meter.feed(chunk)
            chunks.append(chunk)
            self.write(chunk)
            self.flush()
            # Priced per chunk only under a budget: pricing costs more than the forwarding.
            if streamed and status["code"] == 200 and gateway.budget.active:
                estimate = meter.estimate()
                pending = (
                    gateway.price(vendor, estimate, upstream) or 0.0
                    if gateway.budget.limit_usd is not None
                    else 0.0
                )
                refusal = gateway.budget_refusal(pending, counted_tokens(estimate))
                if refusal is not None:
                    cut.append(refusal)
                    raise BudgetStop(cut[0])

        failures: list[str] = []
        while True:
            status["code"], held[:], retry_after[:] = 0, [], []
            try:
                failure = (
                    await gateway.client.stream(
                        url,
                        method="POST",
                        headers=headers,
                        body=self.request.body,
                        on_header=on_header,
                        on_chunk=on_chunk,
                        request_timeout=gateway.request_timeout_s,
                        connect_timeout=10,
                    )
                ).failure  # refused, unreachable, timed out, cut off
            except BudgetStop:
                failure = None  # a cut (or a client gone): said below
            if chunks or cut or self.client_gone:
                break  # the client has part of an answer: it cannot be asked again
            if status["code"] == 401 and may_refresh:
                break  # refreshed below, then asked once more
            if failure is not None:
                failures.append(f"no answer ({failure})")
            elif status["code"] in RETRIED_STATUSES:
                failures.append(f"{status['code']} {_error_message(held)}".strip())
            else:
                break
            if attempt["n"] > gateway.retries:
                break
            wait = gateway.backoff(attempt["n"], retry_after[0] if retry_after else None)
            log.info(
                "%s: upstream %s: %s; retrying in %.1fs (attempt %d of %d)",
                harness,
                upstream.label,
                failures[-1],
                wait,
                attempt["n"] + 1,
                gateway.retries + 1,
            )
            await asyncio.sleep(wait)
            attempt["n"] += 1
        if status["code"] == 401 and may_refresh and not chunks:
            assert upstream.login is not None
            try:
                await upstream.login.refresh(sent_token)
            except LoginError as exc:
                self.send_error_body(wire_path, 401, str(exc), "authentication_error")
                return
            await self.forward(harness, wire_path, vendor, body, prompt, streamed, retried=True)
            return
        if not chunks and not cut and failures:
            tried = f"{attempt['n']} attempt(s)" + (", retried with backoff" * (attempt["n"] > 1))
            if failure is not None:
                self.send_error_body(
                    wire_path,
                    502,
                    f"the model upstream {upstream.label} did not answer ({failure}; {tried}). "
                    f"Check that it is running and reachable, and the base URL and key "
                    f"configured for it.",
                    "api_error",
                )
            else:
                code = status["code"]
                self.send_error_body(
                    wire_path,
                    code,
                    f"the model upstream {upstream.label} answered {failures[-1]} ({tried}): it "
                    f"is {'rate limiting' if code == 429 else 'overloaded or failing'}; try the "
                    f"cell again later.",
                    "rate_limit_error" if code == 429 else "api_error",
                )
            return
        if cut:
            self.write(self.stream_error(wire_path, cut[0]))
        elif not chunks and status["code"]:
            self.set_status(status["code"])  # an answer without a body (a 204, a redirect)
        if not self._finished:
            self.finish()
        if status["code"] == 200 or cut:
            usage, estimated = meter.estimate(), True
            if cut or not chunks:
                pass
            elif not streamed:
                try:
                    usage, estimated = usage_of_body(wire_path, json.loads(b"".join(chunks))), False
                except json.JSONDecodeError:
                    pass
            elif meter.reported_output:
                usage, estimated = meter.usage, False
            gateway.charge(
                harness,
                vendor,
                usage,
                estimated=estimated,
                plan=upstream.login is not None,
                upstream=upstream,
            )
        if gateway.recorder is not None and not cut:
            recorder = gateway.recorder
            recorder.write(
                Exchange(
                    harness,
                    wire_path,
                    recorder.next_index(harness, wire_path),
                    prompt,
                    meter.usage.model,
                    status["code"] or 502,
                    status["content_type"],
                    [c.decode(errors="replace") for c in chunks],
                    streamed,
                )
            )

    @staticmethod
    def stream_error(wire_path: str, message: str) -> bytes:
        """A well-formed last event that ends a stream the budget cut."""
        error: dict[str, Any]
        if wire_path == "messages":
            error = {"type": "error", "error": {"type": "budget_exceeded", "message": message}}
            return f"event: error\ndata: {json.dumps(error)}\n\n".encode()
        if wire_path == "responses":
            error = {
                "type": "error",
                "code": "budget_exceeded",
                "message": message,
                "param": None,
                "sequence_number": 0,
            }
            return f"event: error\ndata: {json.dumps(error)}\n\n".encode()
        if wire_path in GEMINI_WIRES:
            _, error = gemini_error({"status": 402, "type": "budget_exceeded", "message": message})
            return f"data: {json.dumps(error)}\n\n".encode()
        error = {"error": {"message": message, "type": "budget_exceeded", "code": None}}
        return f"data: {json.dumps(error)}\n\ndata: [DONE]\n\n".encode()


class GeminiCallHandler(ModelCallHandler):
    """A Gemini API call: ``/v1beta/models/MODEL:generateContent`` or
    ``:streamGenerateContent`` (metered like the others); ``:countTokens`` and the like pass
    through unmetered. The model and version are in the path, kept for `upstream_for`."""

    async def post(  # type: ignore[override]
        self, harness: str, version: str, model: str, method: str = ""
    ) -> None:
        self.gemini_call = (version, model)
        if method in GEMINI_WIRES:
            await super().post(harness, method)
        elif method in ("countTokens", "embedContent"):
            await self.pass_through(harness, method)
        else:
            raise web.HTTPError(404)

    async def pass_through(self, harness: str, method: str) -> None:
        upstream, url = self.upstream_for("generateContent", harness)
        await self.relay_whole(
            upstream, url.replace(":generateContent", f":{method}", 1), "generateContent"
        )
