"""Claude Code, driven through its stream-json machine mode.

One long-lived ``claude -p --input-format stream-json --output-format stream-json`` process per
session, so the conversation continues across cells. User turns go in on stdin; events come out
on stdout one JSON object a line; permission requests arrive as ``control_request`` /
``can_use_tool`` (``--permission-prompt-tool stdio``) and are answered with the session's
decision. ``--include-partial-messages`` gives the text as it streams.

A stop sends the ``interrupt`` control request (see `JsonLinesHarness.interrupt` for the rest).
If the process has to be killed (a stop it does not honour, a crash), the next turn starts a
new process with ``--resume <claude session id>``, so the conversation still continues.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.harnesses.base import HarnessContext, HarnessError
from omnikernel.harnesses.jsonl import JsonLinesHarness
from omnikernel.harnesses.mcp import NOTEBOOK_SERVER, claude_config

log = logging.getLogger(__name__)

#: Claude Code's tools by what they do (see `omnikernel.events.ACTIONS`).
TOOL_ACTIONS = {
    "Bash": "exec",
    "KillShell": "exec",
    "KillBash": "exec",
    "BashOutput": "read",
    "Read": "read",
    "Glob": "search",
    "Grep": "search",
    "LS": "search",
    "Write": "write",
    "Edit": "edit",
    "MultiEdit": "edit",
    "NotebookEdit": "edit",
    "WebFetch": "fetch",
    "WebSearch": "fetch",
    "TodoWrite": "plan",
    "ExitPlanMode": "plan",
    "EnterPlanMode": "plan",
    "Task": "delegate",
    "Agent": "delegate",
}

#: Keeps Claude Code from talking to anything but its model upstream.
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}


#: Claude Code may send its first model request before its MCP servers connect (a stdio server
#: still starting inside the sandbox): the agent would not see their tools. Wait for them, up
#: to a minute (`MCP_TIMEOUT`, ms; its default 30 s was too short for a Python server on a
#: loaded machine), as Codex does (`omnikernel.harnesses.mcp.STARTUP_TIMEOUT_S`).
MCP_ENV = {"MCP_CONNECTION_NONBLOCKING": "false", "MCP_TIMEOUT": "60000"}


def tool_summary(tool: str, tool_input: dict[str, Any]) -> str:
    """One line saying what a tool call does: the command, the path, the pattern."""
    for key in ("command", "file_path", "notebook_path", "path", "pattern", "url", "query"):
        value = tool_input.get(key)
        if isinstance(value, str) and value:
            return value
    if tool == "TodoWrite":
        return f"{len(tool_input.get('todos', []))} todos"
    if tool in ("Task", "Agent"):
        return str(tool_input.get("description", ""))
    return json.dumps(tool_input, ensure_ascii=False)[:200]


def result_text(content: Any) -> str:
    """A tool result's content (a string or a list of blocks) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
        return "\n".join(parts)
    return "" if content is None else str(content)


class ClaudeHarness(JsonLinesHarness):
    name = "claude"
    display_name = "Claude Code"
    binary_name = "claude"
    npm_package = "@anthropic-ai/claude-code"
    pinned_version = "2.1.197"
    wire = "anthropic"
    #: ``stream_event`` lines are the model's raw stream: `run_turn` only yields their text.
    text_line_prefixes = (b'{"type":"stream_event"',)

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._claude_session: str | None = None
        self._request_ids = itertools.count(1)
        #: Claude Code's ``total_cost_usd`` counts from its process's start, not per turn.
        self._cost_reported = 0.0

    async def on_started(self) -> None:
        self._cost_reported = 0.0  # a new process counts from zero

    def adopt_session(self, native_id: str, source: Path) -> bool:
        """Claude Code resumes ``--resume ID`` from ``projects/<cwd slug>/ID.jsonl`` in its
        config dir (the slug: the working directory with every other character than a letter
        or digit made ``-``)."""
        slug = re.sub(r"[^A-Za-z0-9]", "-", str(self.ctx.cwd))
        target = self.private_dirs()["config"] / "projects" / slug / f"{native_id}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self._claude_session = native_id
        return True

    def command(self, binary: str) -> list[str]:
        argv = [
            binary,
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--permission-prompt-tool",
            "stdio",
            # Every shell command asks the kernel, also those Claude Code judges read-only
            # (`cat`, `git status`), so the policy's rules see (and can stop) each of them.
            "--settings",
            # The kernel's notebook server asks the decision function itself (for every
            # harness alike), so Claude Code does not ask again for its tools.
            json.dumps({"permissions": {"ask": ["Bash"], "allow": [f"mcp__{NOTEBOOK_SERVER}"]}}),
        ]
        if self.mcp_servers:
            # Only these servers: none of the user's own Claude Code config. In a file of the
            # CLI's private config dir, not on its command line, which `ps` shows every user.
            path = self.private_dirs()["config"] / "omnikernel-mcp.json"
            path.touch(mode=0o600)
            path.write_text(json.dumps(claude_config(self.mcp_servers)))
            argv += ["--mcp-config", str(path), "--strict-mcp-config"]
        if self.ctx.model:
            argv += ["--model", self.ctx.model]
        if self._claude_session:
            argv += ["--resume", self._claude_session]
        return argv

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        return {
            **self.base_environment(dirs),
            "CLAUDE_CONFIG_DIR": str(dirs["config"]),
            "ANTHROPIC_BASE_URL": self.upstream.base_url,
            # On a plan login Claude Code gets its session secret where a login token goes:
            # it then sends it as a Bearer token with the OAuth beta, and the gateway swaps
            # in the real token. Either way the secret is good only on this gateway.
            (
                "CLAUDE_CODE_OAUTH_TOKEN" if self.ctx.upstream.login else "ANTHROPIC_API_KEY"
            ): self.ctx.upstream.api_key,
            # A dead upstream should fail the turn in seconds, not after minutes of back-off.
            "CLAUDE_CODE_MAX_RETRIES": "2",
            **MCP_ENV,
            **QUIET_ENV,
        }

    # -- a turn --------------------------------------------------------------------------------

    async def run_turn(self, prompt: str) -> AsyncIterator[Event]:
        for notice in await self.prepare_turn():
            yield notice
        try:
            await self.send({"type": "user", "message": {"role": "user", "content": prompt}})
        except (BrokenPipeError, ConnectionResetError):
            async for event in self.died(self._claude_session):
                yield event
            return
        streamed: set[str] = set()  # message ids whose text already came as deltas
        current_message = ""
        while True:
            message = await self.read()
            if message is None:
                async for event in self.died(self._claude_session):
                    yield event
                return
            kind = message.get("type")
            if kind == "system" and message.get("subtype") == "init":
                self._claude_session = message.get("session_id") or self._claude_session
            elif kind == "system" and message.get("subtype") == "api_retry":
                yield ev.notice(
                    f"The model upstream failed ({message.get('error', 'unknown error')}); "
                    f"retry {message.get('attempt')} of {message.get('max_retries')}."
                )
            elif kind == "stream_event":
                raw = message.get("event", {})
                if raw.get("type") == "message_start":
                    current_message = raw.get("message", {}).get("id", "")
                delta = raw.get("delta", {})
                if raw.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                    streamed.add(current_message)
                    yield ev.text(delta.get("text", ""))
            elif kind == "assistant":
                for event in self._assistant_events(message, streamed):
                    yield event
            elif kind == "user":
                for event in self._tool_results(message):
                    yield event
            elif kind == "control_request":
                async for event in self._answer_permission(message):
                    yield event
            elif kind == "result":
                for event in self._result_events(message):
                    yield event
                return

    def _assistant_events(self, message: dict[str, Any], streamed: set[str]) -> list[Event]:
        body = message.get("message", {})
        if body.get("model") == "<synthetic>":
            return []  # Claude Code's own error text; the result event reports it
        out = []
        for block in body.get("content", []):
            if block.get("type") == "text" and body.get("id") not in streamed:
                out.append(ev.text(block.get("text", "")))
            elif block.get("type") == "tool_use":
                tool, tool_input = block.get("name", "?"), block.get("input") or {}
                out.append(
                    ev.tool_call(
                        block.get("id", ""),
                        tool,
                        TOOL_ACTIONS.get(tool, "other"),
                        tool_summary(tool, tool_input),
                        tool_input,
                    )
                )
        return out

    def _tool_results(self, message: dict[str, Any]) -> list[Event]:
        content = message.get("message", {}).get("content", [])
        if not isinstance(content, list):
            return []
        return [
            ev.tool_result(
                block.get("tool_use_id", ""),
                result_text(block.get("content")),
                bool(block.get("is_error")),
            )
            for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    async def _answer_permission(self, message: dict[str, Any]) -> AsyncIterator[Event]:
        request = message.get("request", {})
        request_id = message.get("request_id", "")
        if request.get("subtype") != "can_use_tool":
            # Requests we do not serve (hooks, MCP) get an error answer, never silence.
            await self.send(
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "error",
                        "request_id": request_id,
                        "error": f"omnikernel does not serve {request.get('subtype')!r}",
                    },
                }
            )
            return
        tool, tool_input = request.get("tool_name", "?"), request.get("input") or {}
        asked = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": request_id,
                "call_id": request.get("tool_use_id", ""),
                "tool": tool,
                "action": TOOL_ACTIONS.get(tool, "other"),
                "summary": tool_summary(tool, tool_input),
                "input": tool_input,
            },
        )
        self.pending_approval = request_id
        yield asked
        decision = await self.ctx.decide(asked)
        yield Event(
            EventKind.APPROVAL_DECISION,
            {
                "request_id": request_id,
                "decision": decision.verdict,
                "reason": decision.reason,
                "by": decision.by,
            },
        )
        answer: dict[str, Any] = (
            {"behavior": "allow", "updatedInput": tool_input}
            if decision.allow
            else {"behavior": "deny", "message": decision.reason}
        )
        await self.send(
            {
                "type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": answer},
            }
        )
        self.pending_approval = None

    def _turn_cost(self, total: Any) -> float | None:
        """This turn's share of the process's running ``total_cost_usd``."""
        if not isinstance(total, int | float):
            return None
        turn = total - self._cost_reported if total >= self._cost_reported else total
        self._cost_reported = float(total)
        return round(turn, 6)

    def _result_events(self, message: dict[str, Any]) -> list[Event]:
        usage = message.get("usage") or {}
        models = list((message.get("modelUsage") or {}).keys())
        out = [
            Event(
                EventKind.USAGE,
                {
                    "model": models[0] if len(models) == 1 else ", ".join(models),
                    "input_tokens": usage.get("input_tokens", 0),
                    "output_tokens": usage.get("output_tokens", 0),
                    "cache_read_tokens": usage.get("cache_read_input_tokens", 0),
                    "cache_write_tokens": usage.get("cache_creation_input_tokens", 0),
                    "cost_usd": self._turn_cost(message.get("total_cost_usd")),
                    "num_turns": message.get("num_turns", 0),
                },
            )
        ]
        failed = message.get("is_error") or message.get("subtype") != "success"
        if failed:
            detail = message.get("result") or "; ".join(map(str, message.get("errors") or []))
            out.append(
                ev.error(
                    f"Claude Code ended the turn with an error: {detail or message.get('subtype')}",
                    self._upstream_hint(str(detail)),
                )
            )
        out.append(
            Event(
                EventKind.TURN_END,
                {
                    "status": "error" if failed else "completed",
                    "harness_session": self._claude_session,
                },
            )
        )
        return out

    def _upstream_hint(self, detail: str) -> str:
        lowered = detail.lower()
        if "budget" in lowered:
            return ""  # the gateway's message already says how to go on
        if any(word in lowered for word in ("connect", "did not answer", "502", "api error")):
            return (
                "The model upstream did not answer. Check that it is running and that "
                "ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY are right, then run the cell again; "
                "the conversation is kept."
            )
        return ""

    # -- stopping ------------------------------------------------------------------------------

    def _deny(self, request_id: str) -> dict[str, Any]:
        return {
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": request_id,
                "response": {"behavior": "deny", "message": "The user stopped this turn."},
            },
        }

    async def wind_down(self) -> list[Event]:
        """The ``interrupt`` control request; Claude Code ends the turn with a ``result``."""
        if self.pending_approval is not None:
            await self.send(self._deny(self.pending_approval))
            self.pending_approval = None
        await self.send(
            {
                "type": "control_request",
                "request_id": f"interrupt-{next(self._request_ids)}",
                "request": {"subtype": "interrupt"},
            }
        )
        while (message := await self.read()) is not None:
            if message.get("type") == "control_request":
                await self.send(self._deny(message.get("request_id", "")))  # one racing the stop
            elif message.get("type") == "result":
                return [e for e in self._result_events(message) if e.kind == EventKind.USAGE]
        raise HarnessError("Claude Code exited while stopping its turn")


__all__ = ["ClaudeHarness", "HarnessError"]
