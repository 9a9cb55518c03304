"""The scripted fake model server: the project's only fake, standing at the vendor's edge.

Serves Anthropic Messages (``/v1/messages``), OpenAI Responses (``/v1/responses``) and Chat
Completions (``/v1/chat/completions``), streaming and not, on 127.0.0.1. Answers come from a
`Scenario` (or from steps queued with `enqueue`, first); every request is logged in `requests`.
The real agent CLIs are pointed at it in tests, and the kernel runs it as the offline rehearsal
model. It runs on the caller's event loop (`await start()`) or in a thread of its own
(`start_in_thread()`), so a blocked caller never stalls the model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

from tornado import httpserver, web
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from . import wire
from .scenario import Conversation, Reply, Scenario, build_reply, error_reply


@dataclasses.dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # parsed JSON, or None


class FakeModelServer:
    """A scripted model on loopback. See the module docstring."""

    def __init__(self, scenario: Scenario | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.scenario = scenario or Scenario()
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._queue: list[dict[str, Any]] = []
        self._ids = (f"{n:06d}" for n in itertools.count(1))
        self._server: httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    # -- lifecycle -----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        return web.Application(
            [
                (r"/v1/messages/count_tokens", CountTokensHandler, {"server": self}),
                (r"/v1/messages", AnthropicHandler, {"server": self}),
                (r"/v1/responses", ResponsesHandler, {"server": self}),
                (r"/v1/chat/completions", ChatHandler, {"server": self}),
                (r"/v1/models", ModelsHandler, {"server": self}),
                (r"/.*", RootHandler, {"server": self}),
            ]
        )

    async def start(self) -> None:
        sockets = bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        self._server = httpserver.HTTPServer(self._app(), idle_connection_timeout=60)
        self._server.add_sockets(sockets)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None

    async def __aenter__(self) -> FakeModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeModelServer:
        """Serve from a thread with its own event loop; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # report to the caller, then end the thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-model", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = self._loop = None

    def __enter__(self) -> FakeModelServer:
        return self if self._thread else self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()


class BaseHandler(web.RequestHandler):
    def initialize(self, server: FakeModelServer) -> None:
        self.server = server

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
    ) -> None:
        body = self.record()
        if not isinstance(body, dict):
            status, payload = error({"status": 400, "type": "invalid_request_error",
                                     "message": "the request body must be a JSON object"})  # fmt: skip
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
        if body.get("stream"):
            await self.stream(streamed(reply, model, ident), reply.chunk_delay)
        else:
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay * 10)
            self.send_json(whole(reply, model, ident))


class AnthropicHandler(BaseHandler):
    async def post(self) -> None:
        await self.answer(wire.anthropic_conversation, wire.anthropic_error,
                          wire.anthropic_message, wire.anthropic_events, "msg_")  # fmt: skip


class ResponsesHandler(BaseHandler):
    async def post(self) -> None:
        await self.answer(wire.responses_conversation, wire.openai_error,
                          wire.responses_object, wire.responses_events, "resp_")  # fmt: skip


class ChatHandler(BaseHandler):
    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}") if self.request.body else {}
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def streamed(reply: Reply, model: str, ident: str) -> list[bytes]:
            return wire.chat_events(reply, model, ident, include_usage)

        await self.answer(wire.chat_conversation, wire.openai_error, wire.chat_completion,
                          streamed, "chatcmpl-")  # fmt: skip


class CountTokensHandler(BaseHandler):
    def post(self) -> None:
        self.record()
        self.send_json({"input_tokens": max(1, len(self.request.body) // 4)})


class ModelsHandler(BaseHandler):
    def get(self) -> None:
        self.record()
        model = {"id": "fake-model", "object": "model", "type": "model", "created": 0,
                 "owned_by": "omnikernel", "display_name": "Fake model"}  # fmt: skip
        self.send_json({"object": "list", "data": [model], "has_more": False})


class RootHandler(BaseHandler):
    def head(self) -> None:
        self.record()
        self.finish()

    def get(self) -> None:
        self.record()
        self.send_json({"fake_model": True, "endpoints": ["/v1/messages", "/v1/responses",
                                                          "/v1/chat/completions"]})  # fmt: skip
