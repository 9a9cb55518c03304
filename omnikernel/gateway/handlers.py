"""The gateway's request handlers, but for model calls (`calls`): what they share (the
upstream and its URL for a path, the upstream's credential in place of the harness's secret,
errors in each vendor's format), the probe answer, the refusal of unknown paths, and the relay
of small unmetered calls (token counting, model lists)."""

from __future__ import annotations

import json

from tornado import httpclient, web

from omnikernel.gateway.credentials import CLAUDE_OAUTH_BETA, LoginError
from omnikernel.gateway.loopback import GuardedHandler
from omnikernel.gateway.meter import (
    GEMINI_WIRES,
)
from omnikernel.gateway.state import GatewayState
from omnikernel.gateway.upstream import Upstream
from omnikernel.gateway.wire import (
    anthropic_error,
    gemini_error,
    openai_error,
)

#: Client headers never forwarded: hop-by-hop, sizes we recompute, and the client's credentials.
DROPPED_HEADERS = {
    "host", "content-length", "connection", "authorization", "x-api-key", "x-goog-api-key",
    "accept-encoding",
    "transfer-encoding", "keep-alive",
}  # fmt: skip


class GatewayHandler(GuardedHandler):
    def initialize(self, gateway: GatewayState) -> None:
        self.gateway = gateway

    def guarded_by(self) -> GatewayState:
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
