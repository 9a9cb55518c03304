"""Token usage read off the wire, for each vendor format, streaming or whole. Pure.

`StreamMeter` is fed the response bytes as they pass and knows, at any moment, the usage so
far: the final counts once the vendor reports them, and an estimate of the output (characters
/ 4) while text is still streaming, so a budget can stop a stream mid-way. Counts are
normalised: `input_tokens` excludes cached input (OpenAI reports it included; Anthropic
apart), so pricing is one formula.

Most of a long stream is text deltas, which matter only to the estimate: they are kept as raw
bytes and parsed only if the estimate is asked for before the vendor reports the real counts
(under a budget, or when a stream ends early), so forwarding does not pay for parsing them.
Nor for splitting them into lines: a block whose every ``data:`` line is a delta (counted in
C: as many ``data:`` as delta types) is kept whole, so only the blocks at a stream's two ends,
with the model and the counts, are read line by line (a 200 kB answer is ~12,000 lines).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

#: The `type` of the events that only carry output text, by wire (as a whole JSON string token;
#: inside a text the quotes would be escaped, so a text cannot fake one).
DELTA_TYPES = {
    "messages": (b'"content_block_delta"',),
    "responses": (b'"response.output_text.delta"', b'"response.function_call_arguments.delta"'),
}
VENDOR_OF_WIRE = {
    "messages": "anthropic",
    "responses": "openai",
    "chat/completions": "openai",
    "generateContent": "gemini",
    "streamGenerateContent": "gemini",
}
GEMINI_WIRES = ("generateContent", "streamGenerateContent")


@dataclasses.dataclass
class TokenUsage:
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


def anthropic_usage(usage: dict[str, Any], into: TokenUsage) -> None:
    for key, attr in (
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cache_read_input_tokens", "cache_read_tokens"),
        ("cache_creation_input_tokens", "cache_write_tokens"),
    ):
        if isinstance(usage.get(key), int):
            setattr(into, attr, usage[key])


def openai_usage(usage: dict[str, Any], into: TokenUsage) -> None:
    """Responses (input/output_tokens) and Chat (prompt/completion_tokens) alike."""
    total_in = usage.get("input_tokens", usage.get("prompt_tokens", 0)) or 0
    details = usage.get("input_tokens_details") or usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens", 0) or 0
    into.input_tokens = max(0, total_in - cached)
    into.cache_read_tokens = cached
    into.output_tokens = usage.get("output_tokens", usage.get("completion_tokens", 0)) or 0


def gemini_usage(usage: dict[str, Any], into: TokenUsage) -> None:
    """``usageMetadata``: the prompt count includes cached tokens; thinking is billed as output."""
    prompt = usage.get("promptTokenCount", 0) or 0
    cached = usage.get("cachedContentTokenCount", 0) or 0
    into.input_tokens = max(0, prompt - cached)
    into.cache_read_tokens = cached
    into.output_tokens = (usage.get("candidatesTokenCount", 0) or 0) + (
        usage.get("thoughtsTokenCount", 0) or 0
    )


def usage_of_body(wire: str, body: dict[str, Any]) -> TokenUsage:
    """Usage of a non-streamed response."""
    usage = TokenUsage(model=str(body.get("model", "")))
    if wire in GEMINI_WIRES:
        usage.model = str(body.get("modelVersion") or "")
        gemini_usage(body.get("usageMetadata") or {}, usage)
    elif wire == "messages":
        anthropic_usage(body.get("usage") or {}, usage)
    else:
        openai_usage(body.get("usage") or {}, usage)
    return usage


class StreamMeter:
    """Reads server-sent events as they pass; see the module docstring."""

    def __init__(self, wire: str, model: str = ""):
        self.wire = wire
        self.usage = TokenUsage(model=model)
        self.output_chars = 0
        self.reported_output = False
        self._buffer = b""
        self._delta_types = DELTA_TYPES.get(wire, ())
        #: Text deltas not parsed yet (see the module docstring): payloads, and whole blocks.
        self._deltas: list[bytes] = []
        self._delta_blocks: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        data = self._buffer + chunk if self._buffer else chunk
        end = data.rfind(b"\n") + 1
        self._buffer = data[end:]  # an incomplete last line waits for the next chunk
        if not end:
            return
        block = data[:end] if self._buffer else data
        if self._delta_types and block.count(b"data:") == sum(
            block.count(kind) for kind in self._delta_types
        ):
            # Each delta line holds its type once (within a text its quotes are escaped) and
            # "data:" at least once; any other data line has no type: so these are all deltas.
            self._delta_blocks.append(block)
            return
        self._read_lines(block)

    def _read_lines(self, block: bytes, deltas_too: bool = False) -> None:
        for raw in block.split(b"\n"):
            line = raw.strip()
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    if any(kind in payload for kind in self._delta_types) and not deltas_too:
                        self._deltas.append(payload)
                    else:
                        self._parse(payload)

    def _parse(self, payload: bytes) -> None:
        try:
            self._event(json.loads(payload))
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass

    @property
    def estimated_output_tokens(self) -> int:
        if self.reported_output:
            return self.usage.output_tokens
        deltas, self._deltas = self._deltas, []
        for payload in deltas:
            self._parse(payload)
        blocks, self._delta_blocks = self._delta_blocks, []
        for block in blocks:
            self._read_lines(block, deltas_too=True)
        return max(self.usage.output_tokens, math.ceil(self.output_chars / 4))

    def estimate(self) -> TokenUsage:
        return dataclasses.replace(self.usage, output_tokens=self.estimated_output_tokens)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if self.wire == "messages":
            if kind == "message_start":
                message = event.get("message") or {}
                self.usage.model = message.get("model") or self.usage.model
                anthropic_usage(message.get("usage") or {}, self.usage)
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
                self.output_chars += len(text or "")
            elif kind == "message_delta":
                anthropic_usage(event.get("usage") or {}, self.usage)
                self.reported_output = True
        elif self.wire == "responses":
            if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
                self.output_chars += len(event.get("delta") or "")
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                response = event.get("response") or {}
                self.usage.model = response.get("model") or self.usage.model
                if response.get("usage"):
                    openai_usage(response["usage"], self.usage)
                    self.reported_output = True
        elif self.wire in GEMINI_WIRES:
            self.usage.model = self.usage.model or event.get("modelVersion") or ""
            finished = False
            for candidate in event.get("candidates") or []:
                finished = finished or bool(candidate.get("finishReason"))
                for part in (candidate.get("content") or {}).get("parts") or []:
                    self.output_chars += len(part.get("text") or "")
                    if call := part.get("functionCall"):
                        self.output_chars += len(json.dumps(call.get("args") or {}))
            if event.get("usageMetadata"):
                gemini_usage(event["usageMetadata"], self.usage)
                self.reported_output = self.reported_output or finished
        else:  # chat/completions
            self.usage.model = event.get("model") or self.usage.model
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                self.output_chars += len(delta.get("content") or "")
                for call in delta.get("tool_calls") or []:
                    self.output_chars += len((call.get("function") or {}).get("arguments") or "")
            if event.get("usage"):
                openai_usage(event["usage"], self.usage)
                self.reported_output = True
