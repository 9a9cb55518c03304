"""The scripted fake model server: the project's only fake, standing at the vendor's edge.

Serves Anthropic Messages (``/v1/messages``), OpenAI Responses (``/v1/responses``), Chat
Completions (``/v1/chat/completions``) and the Gemini API (``/v1beta/models/M:generateContent``
and ``:streamGenerateContent?alt=sse``), streaming and not, on 127.0.0.1. Answers come from a
`Scenario` (or from steps queued with `enqueue`, first); every request is logged in `requests`.
The real agent CLIs are pointed at it in tests, and the kernel runs it as the offline rehearsal
model. It runs on the caller's event loop (`await start()`) or in a thread of its own
(`start_in_thread()`), so a blocked caller never stalls the model.

Given an `api_key` (as the kernel's offline rehearsal model always is: a session secret only
its gateway holds), it answers only requests carrying that key, and nothing from a browser
(`omnikernel.gateway.guard`), like the gateway. Without one it plays an open vendor endpoint, for tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

from tornado import web
from tornado.iostream import StreamClosedError

from omnikernel.gateway import guard, wire
from omnikernel.gateway.loopback import GuardedHandler, LoopbackServer
from omnikernel.gateway.wire import Conversation, Reply
from omnikernel.rehearsal.scenario import Scenario, build_reply, error_reply

GEMINI_PATH = r"/(?:v1beta|v1|v1alpha)/models/([A-Za-z0-9_.-]+):(\w+)"


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, or None


class FakeModelServer(LoopbackServer):
    """A scripted model on loopback. See the module docstring."""

    thread_name = "fake-model"

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
    ):
        super().__init__(host, port)
        self.api_key = api_key
        self.scenario = scenario or Scenario()
        self.requests: list[RecordedRequest] = []
        self._queue: list[dict[str, Any]] = []
        self._ids = (f"{n:06d}" for n in itertools.count(1))
        #: A stand-in OAuth token endpoint (``/v1/oauth/token``, ``/oauth/token``): the answer
        #: to each refresh token it accepts. Every grant asked for is kept in `oauth_requests`.
        self.oauth_grants: dict[str, dict[str, Any]] = {}
        self.oauth_requests: list[dict[str, Any]] = []
        #: Headers added to every model answer (a plan's usage-limit headers, say).
        self.extra_headers: dict[str, str] = {}

    # -- scripting -----------------------------------------------------------------------------

    def enqueue(self, *steps: dict[str, Any]) -> None:
        """Answer the next requests with these steps, in order, before any rule."""
        self._queue.extend(steps)

    def reset(self) -> None:
        self.requests.clear()
        self._queue.clear()

    def bodies(self, path_prefix: str = "/v1/") -> list[Any]:
        return [r.body for r in self.requests if r.path.startswith(path_prefix)]

    def next_id(self) -> str:
        return next(self._ids)

    def reply_for(self, conversation: Conversation, request_chars: int) -> Reply:
        step = self._queue.pop(0) if self._queue else self.scenario.step_for(conversation)
        if step.get("error"):
            return error_reply(step)
        ids = (f"call_{self.next_id()}" for _ in itertools.count())
        return build_reply(step, conversation, request_chars, ids)

    def refusal(
        self, method: str, headers: Mapping[str, str], path_args: tuple[str, ...]
    ) -> str | None:
        if self.api_key is None:
            return None  # an open stand-in for a vendor's API (tests)
        return guard.refusal(method, headers, self.authorities, self.api_key, "this model server")

    def app(self) -> web.Application:
        return web.Application(
            [
                (r"/v1/messages/count_tokens", CountTokensHandler, {"server": self}),
                (r"/v1/messages", AnthropicHandler, {"server": self}),
                (r"/v1/responses", ResponsesHandler, {"server": self}),
                (r"/v1/chat/completions", ChatHandler, {"server": self}),
                (GEMINI_PATH, GeminiHandler, {"server": self}),
                (r"/v1/models", ModelsHandler, {"server": self}),
                (r"/(?:v1/)?oauth/token", OAuthTokenHandler, {"server": self}),
                (r"/.*", RootHandler, {"server": self}),
            ]
        )


class BaseHandler(GuardedHandler):
    def initialize(self, server: FakeModelServer) -> None:
        self.server = server
        self.gone = False
        for name, value in server.extra_headers.items():
            self.set_header(name, value)

    def on_connection_close(self) -> None:
        self.gone = True

    def guarded_by(self) -> FakeModelServer:
        return self.server

    def record(self) -> Any:
        try:
            body = json.loads(self.request.body) if self.request.body else None
        except json.JSONDecodeError:
            body = None
        self.server.requests.append(
            RecordedRequest(
                self.request.method or "",
                self.request.path,
                {k.lower(): v for k, v in self.request.headers.get_all()},
                body,
            )
        )
        return body

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    async def stream(self, frames: list[bytes], delay: float) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        try:
            for frame in frames:
                self.write(frame)
                await self.flush()
                if delay:
                    await asyncio.sleep(delay)
            self.finish()
        except StreamClosedError:
            pass  # the client went away (an interrupt): nothing more to say

    async def answer(
        self,
        read: Callable[[dict[str, Any]], Conversation],
        error: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]],
        whole: Callable[[Reply, str, str], dict[str, Any]],
        streamed: Callable[[Reply, str, str], list[bytes]],
        prefix: str,
        streaming: bool | None = None,
    ) -> None:
        """Answer one model call. `streaming`: whether to stream (the Gemini API says so in
        its path); None: as the body's ``stream`` says."""
        body = self.record()
        if not isinstance(body, dict):
            status, payload = error(
                {
                    "status": 400,
                    "type": "invalid_request_error",
                    "message": "the request body must be a JSON object",
                }
            )
            self.send_json(payload, status)
            return
        conversation = read(body)
        reply = self.server.reply_for(conversation, len(self.request.body))
        if reply.error:
            status, payload = error(reply.error)
            self.send_json(payload, status)
            return
        model = conversation.model or "fake-model"
        ident = f"{prefix}{self.server.next_id()}"
        if reply.delay:
            await asyncio.sleep(reply.delay)  # a slow model: nothing at all until then
            if self.gone:
                return  # the client gave up (a stop): nobody to answer
        if body.get("stream") if streaming is None else streaming:
            await self.stream(streamed(reply, model, ident), reply.chunk_delay)
        else:
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay * 10)
            self.send_json(whole(reply, model, ident))


class AnthropicHandler(BaseHandler):
    async def post(self) -> None:
        await self.answer(
            wire.anthropic_conversation,
            wire.anthropic_error,
            wire.anthropic_message,
            wire.anthropic_events,
            "msg_",
        )


class ResponsesHandler(BaseHandler):
    async def post(self) -> None:
        await self.answer(
            wire.responses_conversation,
            wire.openai_error,
            wire.responses_object,
            wire.responses_events,
            "resp_",
        )


class ChatHandler(BaseHandler):
    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}") if self.request.body else {}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def streamed(reply: Reply, model: str, ident: str) -> list[bytes]:
            return wire.chat_events(reply, model, ident, include_usage)

        await self.answer(
            wire.chat_conversation, wire.openai_error, wire.chat_completion, streamed, "chatcmpl-"
        )


class GeminiHandler(BaseHandler):
    async def post(self, model: str, method: str) -> None:
        if method == "countTokens":
            self.record()
            self.send_json({"totalTokens": max(1, len(self.request.body) // 4)})
            return
        if method not in wire.GEMINI_METHODS:
            raise web.HTTPError(404)

        def read(body: dict[str, Any]) -> Conversation:
            return wire.gemini_conversation(body, model)

        await self.answer(
            read,
            wire.gemini_error,
            wire.gemini_response,
            wire.gemini_events,
            "resp_",
            streaming=method == "streamGenerateContent",
        )


class CountTokensHandler(BaseHandler):
    def post(self) -> None:
        self.record()
        self.send_json({"input_tokens": max(1, len(self.request.body) // 4)})


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        self.record()
        model = {
            "id": "fake-model",
            "object": "model",
            "type": "model",
            "created": 0,
            "owned_by": "omnikernel",
            "display_name": "Fake model",
        }
        self.send_json({"object": "list", "data": [model], "has_more": False})


class OAuthTokenHandler(BaseHandler):
    """A refresh-token grant, answered from `FakeModelServer.oauth_grants` (open: the refresh
    token is the credential here, as at a real token endpoint)."""

    def prepare(self) -> None:
        pass

    def post(self) -> None:
        try:
            grant = json.loads(self.request.body or b"{}")
        except json.JSONDecodeError:
            grant = {}
        self.server.oauth_requests.append(grant)
        answer = self.server.oauth_grants.get(str(grant.get("refresh_token", "")))
        if grant.get("grant_type") != "refresh_token" or answer is None:
            self.send_json({"error": "invalid_grant"}, 400)
            return
        self.send_json(answer)


class RootHandler(BaseHandler):
    def head(self) -> None:
        self.record()
        self.finish()

    def get(self) -> None:
        self.record()
        self.send_json(
            {
                "fake_model": True,
                "endpoints": [
                    "/v1/messages",
                    "/v1/responses",
                    "/v1/chat/completions",
                    "/v1beta/models/{model}:streamGenerateContent",
                ],
            }
        )
