"""A metered model call through the gateway: the policy's hold and the budget first, then a
replay from the tape, or the call forwarded to the upstream and its answer streamed back as it
comes (through `omnikernel.gateway.client`), metered on the way (`meter`), cut when the budget
runs out, retried while no byte has reached the harness, and charged at its end. Gemini's calls
name their model in the path (`GeminiCallHandler`)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypedDict

from tornado import web

from omnikernel.gateway.cassette import (
    CassetteMismatchError,
    Exchange,
)
from omnikernel.gateway.credentials import LoginError
from omnikernel.gateway.handlers import GatewayHandler
from omnikernel.gateway.limits import LIMIT_PREFIXES
from omnikernel.gateway.meter import (
    GEMINI_WIRES,
    VENDOR_OF_WIRE,
    StreamMeter,
    usage_of_body,
)
from omnikernel.gateway.wire import (
    anthropic_conversation,
    chat_conversation,
    gemini_conversation,
    gemini_error,
    responses_conversation,
)
from omnikernel.policy.amounts import counted_tokens

log = logging.getLogger(__name__)


PROMPT_OF = {
    "messages": anthropic_conversation,
    "responses": responses_conversation,
    "chat/completions": chat_conversation,
    "generateContent": gemini_conversation,
    "streamGenerateContent": gemini_conversation,
}


PASSED_BACK_HEADERS = {"content-type", "request-id", "x-request-id", "openai-processing-ms"}


#: Upstream answers worth asking again: rate limits, overload (Anthropic's 529), server errors.
RETRIED_STATUSES = {408, 429, 500, 502, 503, 504, 529}


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


class _Status(TypedDict):
    """What a forwarded answer's headers said, as `GatewayHandler.forward` gathers them."""

    code: int
    content_type: str


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
            self.write(chunk)
            self.flush()  # first: the harness gets the bytes before they are metered
            meter.feed(chunk)
            chunks.append(chunk)
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
