"""Any agent that speaks the Agent Client Protocol (ACP) over stdio, configured by command line.

``initialize`` (advertising no ``fs/*`` and no ``terminal/*`` capability: serving those from the
kernel would let the agent act outside its sandbox, so such requests are refused), one
``session/new`` per session (``session/load`` after a restart, when the agent can), then
``session/prompt`` per turn with ``session/update`` notifications streaming text and tool calls,
``session/request_permission`` answered by the session's decision function (always a *once*
option, so the policy sees every call), and ``session/cancel`` to stop.

ACP agents are configured, not installed as plug-ins: ``c.OmniKernel.acp_agents`` maps a name
to its command line; `acp_harness` makes a harness class for each. The agent is pointed at the
model gateway through both vendors' standard variables.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from omnikernel import __version__
from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.harnesses.base import HarnessContext, HarnessError
from omnikernel.harnesses.claude import MCP_ENV, QUIET_ENV
from omnikernel.harnesses.jsonl import JsonRpcHarness
from omnikernel.harnesses.mcp import acp_servers, is_notebook_tool

PROTOCOL_VERSION = 1
#: ACP tool kinds by what they do (see `omnikernel.events.ACTIONS`).
KIND_ACTIONS = {"read": "read", "edit": "edit", "delete": "edit", "move": "edit",
                "search": "search", "execute": "exec", "think": "plan", "fetch": "fetch"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AcpAgent:
    """One configured ACP agent."""

    command: tuple[str, ...]
    wire: str = "anthropic"
    package: str = ""  # npm package@version, for the install hint

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | list[str]) -> AcpAgent:
        if isinstance(value, list):
            return cls(tuple(value))
        return cls(
            tuple(value["command"]), value.get("wire", "anthropic"), value.get("package", "")
        )


#: The ACP agents known out of the box (installed by `make harness-clis`).
DEFAULT_ACP_AGENTS = {
    "claude-acp": AcpAgent(
        ("claude-code-acp",), "anthropic", "@zed-industries/claude-code-acp@0.16.2"
    ),
}


def content_text(content: Any) -> str:
    """Text out of ACP content: a block, a list of blocks, or tool-call content items."""
    if isinstance(content, list):
        return "\n".join(content_text(c) for c in content)
    if isinstance(content, dict):
        if content.get("type") == "text":
            return str(content.get("text", ""))
        if content.get("type") == "content":
            return content_text(content.get("content"))
        if content.get("type") == "diff":
            return f"diff {content.get('path', '')}"
    return ""


class AcpHarness(JsonRpcHarness):
    """The generic adapter; `acp_harness` binds it to one configured agent."""

    agent: AcpAgent
    wire = "anthropic"
    #: Whether a restarted CLI really continues a session through ``session/load`` (an agent
    #: may advertise it and still keep nothing to load; then a handoff carries the context).
    loads_sessions: ClassVar[bool] = True

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._session: str | None = None
        self._can_load = False
        self._prompt_id: int | None = None

    @classmethod
    def install_command(cls) -> str:
        if cls.agent.package:
            return f"npm install -g {cls.agent.package}"
        return f"install {cls.binary_name} (an ACP agent) and put it on PATH"

    def command(self, binary: str) -> list[str]:
        return [binary, *self.agent.command[1:]]

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        url, key = self.upstream.base_url, self.ctx.upstream.api_key
        base = url.removesuffix("/v1")
        return {
            **self.base_environment(dirs),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "CLAUDE_CONFIG_DIR": str(dirs["config"] / "claude"),
            "CODEX_HOME": str(dirs["config"] / "codex"),
            "ANTHROPIC_BASE_URL": base,
            "ANTHROPIC_API_KEY": key,
            "OPENAI_BASE_URL": base + "/v1",
            "OPENAI_API_KEY": key,
            **MCP_ENV,
            **QUIET_ENV,
        }

    async def on_started(self) -> None:
        result = await self.call(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": {
                    "fs": {"readTextFile": False, "writeTextFile": False},
                    "terminal": False,
                },
                "clientInfo": {"name": "omnikernel", "version": __version__},
            },
        )
        self._can_load = self.loads_sessions and bool(
            (result.get("agentCapabilities") or {}).get("loadSession")
        )
        http = bool(
            ((result.get("agentCapabilities") or {}).get("mcpCapabilities") or {}).get("http")
        )
        setup = {"cwd": str(self.ctx.cwd), "mcpServers": acp_servers(self.mcp_servers, http)}
        if self._session and self._can_load:
            await self.call("session/load", {"sessionId": self._session, **setup})
        else:
            self._session = (await self.call("session/new", setup))["sessionId"]

    def remembers(self) -> bool:
        return self.running or self._session is None or self.loads_sessions

    def resumes(self) -> bool:
        return self._can_load

    # -- a turn --------------------------------------------------------------------------------

    async def run_turn(self, prompt: str) -> AsyncIterator[Event]:
        for notice in await self.prepare_turn():
            yield notice
        self._prompt_id = await self.request(
            "session/prompt",
            {"sessionId": self._session, "prompt": [{"type": "text", "text": prompt}]},
        )
        shown: set[str] = set()
        while True:
            message = await self.read()
            if message is None:
                async for event in self.died(self._session):
                    yield event
                return
            method = message.get("method", "")
            if message.get("id") == self._prompt_id and not method:
                for event in self._prompt_done(message):
                    yield event
                return
            if "id" in message and method:
                async for event in self._answer(message, shown):
                    yield event
            elif method == "session/update":
                for event in self._update((message.get("params") or {}).get("update") or {}, shown):
                    yield event

    def _update(self, update: dict[str, Any], shown: set[str]) -> list[Event]:
        kind = update.get("sessionUpdate")
        if kind == "agent_message_chunk":
            text = content_text(update.get("content"))
            return [ev.text(text)] if text else []
        call_id = str(update.get("toolCallId", ""))
        out = []
        if kind in ("tool_call", "tool_call_update") and call_id not in shown:
            raw = self._raw_input(update)
            done = update.get("status") in ("completed", "failed")
            if raw or done:
                shown.add(call_id)
                out.append(self._tool_call(update))
        if kind == "tool_call_update" and update.get("status") in ("completed", "failed"):
            output = update.get("rawOutput")
            text = output if isinstance(output, str) else content_text(update.get("content"))
            if not text and output not in (None, ""):
                text = json.dumps(output)
            out.append(ev.tool_result(call_id, text, update.get("status") == "failed"))
        return out

    @staticmethod
    def _tool_name(call: dict[str, Any]) -> str:
        """The tool's own name where the agent gives it in ``_meta`` (claude-code-acp under
        ``claudeCode``, Qwen Code at the top), else the call's title."""
        meta = call.get("_meta") or {}
        name = (meta.get("claudeCode") or {}).get("toolName") or meta.get("toolName")
        return str(name or call.get("title") or call.get("kind") or "tool")

    def _raw_input(self, call: dict[str, Any]) -> dict[str, Any]:
        """The tool's input as the agent reports it (`rawInput`)."""
        raw = call.get("rawInput")
        return raw if isinstance(raw, dict) else {}

    def _tool_call(self, call: dict[str, Any]) -> Event:
        raw = self._raw_input(call)
        summary = next(
            (
                str(raw[k])
                for k in ("command", "file_path", "path", "pattern", "url")
                if isinstance(raw.get(k), str)
            ),
            str(call.get("title", "")),
        )
        return ev.tool_call(
            str(call.get("toolCallId", "")),
            self._tool_name(call),
            KIND_ACTIONS.get(str(call.get("kind")), "other"),
            summary,
            raw,
        )

    def _prompt_done(self, message: dict[str, Any]) -> list[Event]:
        self._prompt_id = None
        if "error" in message:
            detail = (message["error"] or {}).get("message", "unknown error")
            return [
                ev.error(f"{self.display_name} failed the turn: {detail}"),
                Event(EventKind.TURN_END, {"status": "error", "harness_session": self._session}),
            ]
        stop = (message.get("result") or {}).get("stopReason", "end_turn")
        status = "interrupted" if stop == "cancelled" else "completed"
        if stop == "refusal":
            status = "error"
        # ACP reports no token counts; the gateway meters this agent's calls.
        usage = Event(
            EventKind.USAGE,
            {
                "model": self.ctx.model or self.default_model or "",
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": None,
                "num_turns": 1,
            },
        )
        return [
            usage,
            Event(EventKind.TURN_END, {"status": status, "harness_session": self._session}),
        ]

    async def _answer(self, message: dict[str, Any], shown: set[str]) -> AsyncIterator[Event]:
        method, ident = message["method"], message["id"]
        if method != "session/request_permission":
            await self.refuse(ident, method)  # fs/*, terminal/*: never served outside the sandbox
            return
        params = message.get("params") or {}
        call = params.get("toolCall") or {}
        as_event = self._tool_call(call)
        call_id = str(call.get("toolCallId", ""))
        if call_id and call_id not in shown:
            # Some agents (Gemini CLI) ask before they announce the call: shown first, so
            # every tool call precedes its approval.
            shown.add(call_id)
            yield as_event
        if is_notebook_tool(str(as_event.data.get("tool", ""))):
            # The notebook server asks the decision function itself when the call reaches it.
            option = next(
                (o for o in params.get("options") or [] if o.get("kind") == "allow_once"), None
            )
            outcome = (
                {"outcome": "selected", "optionId": option["optionId"]}
                if option
                else {"outcome": "cancelled"}
            )
            await self.respond(ident, {"outcome": outcome})
            return
        asked = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": str(ident),
                **{k: as_event.data[k] for k in ("call_id", "tool", "action", "summary", "input")},
            },
        )
        self.pending_approval = ident
        yield asked
        decision = await self.ctx.decide(asked)
        yield Event(
            EventKind.APPROVAL_DECISION,
            {
                "request_id": str(ident),
                "decision": decision.verdict,
                "reason": decision.reason,
                "by": decision.by,
            },
        )
        wanted = "allow_once" if decision.allow else "reject_once"
        option = next((o for o in params.get("options") or [] if o.get("kind") == wanted), None)
        outcome = (
            {"outcome": "selected", "optionId": option["optionId"]}
            if option
            else {"outcome": "cancelled"}
        )
        await self.respond(ident, {"outcome": outcome})
        self.pending_approval = None

    # -- stopping ------------------------------------------------------------------------------

    async def wind_down(self) -> list[Event]:
        """``session/cancel``; the agent answers the pending ``session/prompt`` with
        ``stopReason: cancelled``. Permission requests pending or racing it are cancelled, as
        the protocol asks of a client that cancels."""
        if self.pending_approval is not None:
            await self.respond(self.pending_approval, {"outcome": {"outcome": "cancelled"}})
            self.pending_approval = None
        await self.notify("session/cancel", {"sessionId": self._session})
        while (message := await self.read()) is not None:
            if "id" in message and message.get("method"):
                if message["method"] == "session/request_permission":
                    await self.respond(message["id"], {"outcome": {"outcome": "cancelled"}})
                else:
                    await self.refuse(message["id"], message["method"])
            elif message.get("id") == self._prompt_id:
                self._prompt_id = None
                return []
        raise HarnessError(f"{self.display_name} exited while stopping its turn")


def acp_harness(name: str, agent: AcpAgent) -> type[AcpHarness]:
    """A harness class for one configured ACP agent."""
    return type(
        f"AcpHarness[{name}]",
        (AcpHarness,),
        {
            "name": name,
            "display_name": f"{name} (ACP)",
            "binary_name": agent.command[0],
            "npm_package": agent.package.rpartition("@")[0] or agent.command[0],
            "pinned_version": agent.package.rpartition("@")[2],
            "wire": agent.wire,
            "agent": agent,
        },
    )
