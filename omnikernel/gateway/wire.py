"""The vendor wire formats (Anthropic Messages, OpenAI Responses and Chat Completions, Google's
Gemini API), each both ways: what the gateway reads of a model call, and
what the offline rehearsal model (`omnikernel.rehearsal`) writes.

A model call, whatever its format, is a `Conversation` (what the request says) answered by a
`Reply` (text, tool calls, usage). For every format: `*_conversation(body)` reads a request into a `Conversation`, and
`*_events(reply, ...)` / `*_message(reply, ...)` write a `Reply` as the vendor would, streamed
(a list of server-sent-event frames, each sent as one chunk so delays can fall between them)
or whole. Shapes follow the vendors' documented responses closely enough for their official
SDKs and the real agent CLIs.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

Frame = bytes
CONTEXT_TAG = re.compile(r"^\s*<([A-Za-z_][\w-]*)[^>]*>.*</\1>\s*$", re.DOTALL)
CWD_PATTERNS = (
    re.compile(r"Working directory:\s*(\S+)"),
    re.compile(r"<cwd>\s*([^<\s]+)\s*</cwd>"),
    re.compile(r"Current working directory:\s*(\S+)"),
    re.compile(r"Workspace Directories:\**\s*-\s*(\S+)"),  # Gemini CLI, Qwen Code
)


#: The Responses API's client-executed tool search, as Codex offers it.
TOOL_SEARCH = "tool_search"


@dataclasses.dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclasses.dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    #: The Responses API's namespace of a deferred tool (Codex's MCP tools: ``mcp__notebook__``).
    namespace: str = ""

    @property
    def is_tool_search(self) -> bool:
        """A Responses API ``tool_search_call`` (Codex loads its MCP tools through one)."""
        return self.name == TOOL_SEARCH


@dataclasses.dataclass
class Reply:
    """One model answer, independent of the wire format that will carry it."""

    text: str = ""
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    usage: Usage = dataclasses.field(default_factory=Usage)
    chunk_delay: float = 0.0
    error: dict[str, Any] | None = None
    delay: float = 0.0

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool_calls else "end_turn"


@dataclasses.dataclass
class Conversation:
    """What a request says, whatever its wire format."""

    prompt: str
    position: int  # assistant answers since the prompt
    tools: dict[str, dict[str, Any]]  # offered tool name -> JSON schema of its input
    cwd: str = ""
    model: str = ""
    #: Tools a tool search loaded, by the name `tools` lists them under: (namespace, name).
    namespaced: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)
    #: Deferred tools a tool search showed, called through the agent's ``tool_call`` function
    #: rather than offered in `tools` (Qwen Code).
    deferred: frozenset[str] = frozenset()


def is_context(text: str) -> bool:
    """Context an agent wraps in a tag of its own, not what the user typed."""
    return bool(CONTEXT_TAG.match(text))


def find_cwd(texts: list[str]) -> str:
    for text in texts:
        for pattern in CWD_PATTERNS:
            if found := pattern.search(text):
                return found.group(1)
    return ""


def chunks(text: str, words: int = 3) -> list[str]:
    """Text in small pieces of a few words, the way a model streams it."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    return ["".join(pieces[i : i + words]) for i in range(0, len(pieces), words)]


def sse(data: dict[str, Any], event: str | None = None) -> Frame:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def texts_of(content: Any, kinds: tuple[str, ...] = ("text", "input_text")) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in kinds
        ]
    return []


TAGGED = re.compile(r"<([A-Za-z_][\w-]*)[^>]*>.*?</\1>", re.DOTALL)


def prompt_of(texts: list[str]) -> str:
    """What the user typed: context that agents or the kernel wrap in tags is left out."""
    kept = (TAGGED.sub("", t).strip() for t in texts if not is_context(t))
    return "\n".join(t for t in kept if t).strip()


# -- Anthropic Messages ---------------------------------------------------------------------------


def anthropic_conversation(body: dict[str, Any]) -> Conversation:
    messages = body.get("messages") or []
    prompt, position = "", 0
    for message in messages:
        if message.get("role") == "user":
            text = prompt_of(texts_of(message.get("content")))
            if text:
                prompt, position = text, 0
        elif message.get("role") == "assistant":
            position += 1
    system = body.get("system")
    system_texts = texts_of(system) if system else []
    first_user = texts_of(messages[0].get("content")) if messages else []
    tools = {t["name"]: t.get("input_schema") or {} for t in body.get("tools") or [] if "name" in t}
    return Conversation(
        prompt, position, tools, find_cwd(system_texts + first_user), body.get("model", "")
    )


def anthropic_usage(reply: Reply, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": reply.usage.input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": reply.usage.cache_read_tokens,
        "cache_creation_input_tokens": reply.usage.cache_write_tokens,
    }


def anthropic_events(reply: Reply, model: str, message_id: str) -> list[Frame]:
    frames = [
        sse(
            {
                "type": "message_start",
                "message": {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": anthropic_usage(reply, 1),
                },
            },
            "message_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    index = 0
    if reply.text:
        start = {"type": "text", "text": ""}
        frames.append(
            sse(
                {"type": "content_block_start", "index": 0, "content_block": start},
                "content_block_start",
            )
        )
        for piece in chunks(reply.text):
            delta = {"type": "text_delta", "text": piece}
            frames.append(
                sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            )
        frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for call in reply.tool_calls:
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        frames.append(
            sse(
                {"type": "content_block_start", "index": index, "content_block": block},
                "content_block_start",
            )
        )
        for piece in chunks(json.dumps(call.arguments), 4):
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(
                sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
            )
        frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    frames.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": reply.usage.output_tokens},
            },
            "message_delta",
        )
    )
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


def anthropic_message(reply: Reply, model: str, message_id: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in reply.tool_calls
    ]
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(reply, reply.usage.output_tokens),
    }


def anthropic_error(error: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status = int(error.get("status", 500))
    kind = error.get("type", "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.get("message", "")}}


# -- OpenAI Responses -----------------------------------------------------------------------------


def responses_conversation(body: dict[str, Any]) -> Conversation:
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    prompt, position, in_answer, all_texts = "", 0, False, []
    loaded: list[dict[str, Any]] = []  # tools tool searches returned
    for item in items:
        role, kind = item.get("role"), item.get("type", "message")
        if kind == "tool_search_output":
            loaded += [t for t in item.get("tools") or [] if isinstance(t, dict)]
        if kind in ("tool_search_call", "tool_search_output"):
            continue  # a search for tools is not an answer: the step it serves comes after it
        if kind == "message" and role == "user":
            texts = texts_of(item.get("content"))
            all_texts += texts
            if text := prompt_of(texts):
                prompt, position = text, 0
            in_answer = False
        elif (kind == "message" and role == "assistant") or kind in ("function_call", "reasoning"):
            if not in_answer:
                position += 1
            in_answer = True
        else:  # tool outputs, developer/system messages
            in_answer = False
            all_texts += texts_of(item.get("content"))
    tools = {}
    for tool in body.get("tools") or []:
        name = tool.get("name") or tool.get("type", "")
        tools[name] = tool.get("parameters") or {}
    namespaced: dict[str, tuple[str, str]] = {}
    for group in loaded:
        members = group.get("tools") if group.get("type") == "namespace" else [group]
        space = str(group.get("name", "")) if group.get("type") == "namespace" else ""
        for tool in members or []:
            name = str(tool.get("name", ""))
            space = str(tool.get("namespace") or space)
            tools[space + name] = tool.get("parameters") or {}
            namespaced[space + name] = (space, name)
    instructions = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    return Conversation(
        prompt,
        position,
        tools,
        find_cwd(all_texts + instructions),
        body.get("model", ""),
        namespaced,
    )


def responses_usage(reply: Reply) -> dict[str, Any]:
    u = reply.usage
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def responses_items(reply: Reply, response_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reply.text:
        items.append(
            {
                "id": f"msg_{response_id}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    for call in reply.tool_calls:
        if call.is_tool_search:
            items.append(
                {
                    "id": f"ts_{call.id}",
                    "type": "tool_search_call",
                    "status": "completed",
                    "call_id": call.id,
                    "execution": "client",
                    "arguments": call.arguments,
                }
            )
            continue
        item = {
            "id": f"fc_{call.id}",
            "type": "function_call",
            "status": "completed",
            "call_id": call.id,
            "name": call.name,
            "arguments": json.dumps(call.arguments),
        }
        if call.namespace:
            item["namespace"] = call.namespace
        items.append(item)
    return items


def responses_object(
    reply: Reply, model: str, response_id: str, status: str = "completed"
) -> dict[str, Any]:
    done = status == "completed"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": responses_items(reply, response_id) if done else [],
        "usage": responses_usage(reply) if done else None,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
    }


def responses_events(reply: Reply, model: str, response_id: str) -> list[Frame]:
    seq = iter(range(1_000_000))
    frames: list[Frame] = []

    def emit(kind: str, **fields: Any) -> None:
        frames.append(sse({"type": kind, "sequence_number": next(seq), **fields}, kind))

    emit("response.created", response=responses_object(reply, model, response_id, "in_progress"))
    emit(
        "response.in_progress", response=responses_object(reply, model, response_id, "in_progress")
    )
    for index, item in enumerate(responses_items(reply, response_id)):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            emit("response.content_part.added", **where, part=part)
            for piece in chunks(text):
                emit("response.output_text.delta", **where, delta=piece, logprobs=[])
            emit("response.output_text.done", **where, text=text, logprobs=[])
            emit("response.content_part.done", **where, part={**part, "text": text})
        elif item["type"] == "tool_search_call":
            emit("response.output_item.added", output_index=index, item=item)
        else:
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in chunks(item["arguments"], 4):
                emit(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=responses_object(reply, model, response_id))
    return frames


def openai_error(error: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status = int(error.get("status", 500))
    body = {
        "message": error.get("message", ""),
        "type": error.get("type", "server_error"),
        "param": None,
        "code": error.get("code"),
    }
    return status, {"error": body}


# -- OpenAI Chat Completions ----------------------------------------------------------------------


def _only_tool_search(message: dict[str, Any]) -> bool:
    """An assistant message that only searched for tools (Qwen Code defers MCP tools behind
    its own ``tool_search`` function): not an answer, so the step it serves comes after it."""
    calls = message.get("tool_calls") or []
    return bool(calls) and all(
        (c.get("function") or {}).get("name") == TOOL_SEARCH for c in calls if isinstance(c, dict)
    )


#: A tool declaration in a Qwen Code ``tool_search`` result.
DEFERRED_FUNCTION = re.compile(r'<function>\{"name":"([^"]+)"')


def chat_conversation(body: dict[str, Any]) -> Conversation:
    prompt, position, all_texts = "", 0, []
    deferred: set[str] = set()
    for message in body.get("messages") or []:
        texts = texts_of(message.get("content"))
        all_texts += texts
        if message.get("role") == "tool":
            deferred.update(m for t in texts for m in DEFERRED_FUNCTION.findall(t))
        if message.get("role") == "user" and (text := prompt_of(texts)):
            prompt, position = text, 0
        elif message.get("role") == "assistant" and not _only_tool_search(message):
            position += 1
    tools = {
        t["function"]["name"]: t["function"].get("parameters") or {}
        for t in body.get("tools") or []
        if isinstance(t.get("function"), dict)
    }
    return Conversation(
        prompt,
        position,
        tools,
        find_cwd(all_texts),
        body.get("model", ""),
        deferred=frozenset(deferred),
    )


def chat_usage(reply: Reply) -> dict[str, Any]:
    u = reply.usage
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    }


def chat_events(reply: Reply, model: str, completion_id: str, include_usage: bool) -> list[Frame]:
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Frame:
        return sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": piece}) for piece in chunks(reply.text)]
    for index, call in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        frames.append(chunk({"tool_calls": [head]}))
        for piece in chunks(json.dumps(call.arguments), 4):
            frames.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
            )
    frames.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if include_usage:
        frames.append(
            sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": chat_usage(reply),
                }
            )
        )
    frames.append(b"data: [DONE]\n\n")
    return frames


def chat_completion(reply: Reply, model: str, completion_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": chat_usage(reply),
    }


# -- Google Gemini API (generateContent / streamGenerateContent) --------------------------------
#
# The model is named in the path (``/v1beta/models/MODEL:streamGenerateContent?alt=sse``), not
# the body; the body holds ``contents`` (``role`` "user" | "model", ``parts`` of ``text``,
# ``functionCall`` {name, args}, ``functionResponse``), ``systemInstruction`` and ``tools``
# (``functionDeclarations`` with ``parameters`` or ``parametersJsonSchema``). Answers are
# ``GenerateContentResponse`` objects: one whole, or one per server-sent event when streamed,
# each with ``candidates`` and ``usageMetadata`` (the last one's counts are final).

#: The Gemini API's methods the gateway meters, by the name after the colon.
GEMINI_METHODS = ("generateContent", "streamGenerateContent")


def gemini_conversation(body: dict[str, Any], model: str = "") -> Conversation:
    prompt, position, all_texts = "", 0, []
    for content in body.get("contents") or []:
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        texts = [str(p["text"]) for p in parts if isinstance(p.get("text"), str)]
        all_texts += texts
        if content.get("role", "user") == "user":
            if text := prompt_of(texts):
                prompt, position = text, 0
        else:  # "model"
            position += 1
    system = body.get("systemInstruction") or {}
    if isinstance(system, dict):
        all_texts += [str(p.get("text", "")) for p in system.get("parts") or [] if "text" in p]
    tools = {}
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            schema = declaration.get("parametersJsonSchema") or declaration.get("parameters")
            tools[str(declaration.get("name", ""))] = schema or {}
    return Conversation(prompt, position, tools, find_cwd(all_texts), model)


def gemini_usage(reply: Reply) -> dict[str, int]:
    u = reply.usage
    usage = {
        "promptTokenCount": u.input_tokens + u.cache_read_tokens,
        "candidatesTokenCount": u.output_tokens,
        "totalTokenCount": u.input_tokens + u.cache_read_tokens + u.output_tokens,
    }
    if u.cache_read_tokens:
        usage["cachedContentTokenCount"] = u.cache_read_tokens
    return usage


def _gemini_chunk(
    parts: list[dict[str, Any]], model: str, response_id: str, finish: str | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "modelVersion": model, "responseId": response_id}


def _gemini_call_parts(reply: Reply) -> list[dict[str, Any]]:
    return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in reply.tool_calls]


def gemini_response(reply: Reply, model: str, response_id: str) -> dict[str, Any]:
    parts = ([{"text": reply.text}] if reply.text else []) + _gemini_call_parts(reply)
    answer = _gemini_chunk(parts or [{"text": ""}], model, response_id, "STOP")
    return {**answer, "usageMetadata": gemini_usage(reply)}


def gemini_events(reply: Reply, model: str, response_id: str) -> list[Frame]:
    """The stream as the Gemini API sends it with ``alt=sse``: plain ``data:`` events, the
    last one carrying ``finishReason`` and the final ``usageMetadata``."""
    frames = []
    prompt_only = {"promptTokenCount": gemini_usage(reply)["promptTokenCount"]}
    for piece in chunks(reply.text):
        answer = _gemini_chunk([{"text": piece}], model, response_id)
        frames.append(sse({**answer, "usageMetadata": prompt_only}))
    last = _gemini_chunk(_gemini_call_parts(reply) or [{"text": ""}], model, response_id, "STOP")
    frames.append(sse({**last, "usageMetadata": gemini_usage(reply)}))
    return frames


#: The Gemini API's error ``status`` names by HTTP status.
GEMINI_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION",
                   403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                   500: "INTERNAL", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 529: "UNAVAILABLE"}  # fmt: skip


def gemini_error(error: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status = int(error.get("status", 500))
    body = {
        "code": status,
        "message": error.get("message", ""),
        "status": GEMINI_STATUSES.get(status, "UNKNOWN"),
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": kind}]
        if (kind := error.get("type"))
        else [],
    }
    return status, {"error": body}
