"""Pi, driven through `pi --mode rpc` (JSON lines on stdio).

Pi has no approval step of its own, so the kernel loads an extension (`pi_gate.ts`) that asks
before every tool call through ``ctx.ui.confirm``; in RPC mode that arrives here as an
``extension_ui_request`` and is answered with the session's decision. The provider is written
per session to ``models.json`` in a private ``PI_CODING_AGENT_DIR``: the gateway's Anthropic
Messages endpoint, the name of the variable holding its session secret (the file never holds
the secret), and prices from the project's price table (so Pi's own cost figure is a
cross-check of the gateway's).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.gateway import PriceTable
from omnikernel.harnesses.base import HarnessContext, HarnessError
from omnikernel.harnesses.jsonl import JsonLinesHarness
from omnikernel.harnesses.mcp import McpServer, is_notebook_tool

GATE = Path(__file__).with_name("pi_gate.ts")
#: Pi's MCP client for HTTP servers (Pi's CLI has none), and the variable it reads them from.
MCP_EXTENSION = Path(__file__).with_name("pi_mcp.ts")
MCP_VARIABLE = "OMNIKERNEL_MCP_SERVERS"
KEY_VARIABLE = "OMNIKERNEL_PI_KEY"
PROVIDER = "omnikernel"
DEFAULT_MODEL = "claude-sonnet-4-6"
TOOL_ACTIONS = {"bash": "exec", "read": "read", "write": "write", "edit": "edit",
                "grep": "search", "find": "search", "ls": "search"}  # fmt: skip


def tool_summary(args: dict[str, Any]) -> str:
    for key in ("command", "path", "pattern"):
        if isinstance(args.get(key), str):
            return str(args[key])
    return json.dumps(args)[:200]


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class PiHarness(JsonLinesHarness):
    name = "pi"
    display_name = "Pi"
    binary_name = "pi"
    npm_package = "@mariozechner/pi-coding-agent"
    pinned_version = "0.73.1"
    wire = "anthropic"
    #: ``message_update`` lines stream the answer: `run_turn` only yields their text.
    text_line_prefixes = (b'{"type":"message_update"',)
    mcp_note = "HTTP servers only (Pi has no MCP client: omnikernel's pi_mcp.ts extension is one)"

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._ids = 0
        self._started_once = False

    default_model = DEFAULT_MODEL

    @property
    def model(self) -> str:
        return self.ctx.model or DEFAULT_MODEL

    def command(self, binary: str) -> list[str]:
        argv = [
            binary,
            "--mode",
            "rpc",
            "--provider",
            PROVIDER,
            "--model",
            self.model,
            "-e",
            str(GATE),
        ]
        if self.mcp_servers:
            argv += ["-e", str(MCP_EXTENSION)]
        if self._started_once:
            argv.append("--continue")  # a restart picks the conversation up again
        self._started_once = True
        return argv

    def adopt_session(self, native_id: str, source: Path) -> bool:
        """Pi's ``--continue`` takes the newest session of the working directory, kept in
        ``sessions/--<cwd with / as ->--/`` under ``PI_CODING_AGENT_DIR``."""
        slug = "--" + str(self.ctx.cwd).strip("/").replace("/", "-") + "--"
        target = self.private_dirs()["config"] / "sessions" / slug / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self._started_once = True  # the next start continues it
        return True

    def readable_paths(self) -> tuple[Path, ...]:
        return (GATE, MCP_EXTENSION)

    def take_mcp_servers(self) -> tuple[McpServer, ...]:
        """HTTP servers only: `MCP_EXTENSION` calls them; nothing here runs a stdio server."""
        self.mcp_servers = tuple(s for s in super().take_mcp_servers() if s.is_http)
        return self.mcp_servers

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        self._write_models(dirs["config"])
        return {
            **self.base_environment(dirs),
            "PI_CODING_AGENT_DIR": str(dirs["config"]),
            "PI_OFFLINE": "1",
            "PI_TELEMETRY": "0",
            # V8's young generation grows to 16 MiB semi-spaces by default; 4 MiB keeps a
            # long session's RSS about 15 MiB lower (measured over 100 turns) at the cost of
            # more, shorter scavenges. The old generation is left unbounded (no OOM risk).
            "NODE_OPTIONS": "--max-semi-space-size=4",
            KEY_VARIABLE: self.ctx.upstream.api_key,
            MCP_VARIABLE: json.dumps(
                [
                    {"name": s.name, "url": s.url, "headers": dict(s.headers)}
                    for s in self.mcp_servers
                ]
            ),
        }

    def _write_models(self, agent_dir: Path) -> None:
        price = PriceTable.load().lookup("anthropic", self.model)
        cost = (
            {
                "input": price.input,
                "output": price.output,
                "cacheRead": price.cache_read,
                "cacheWrite": price.cache_write,
            }
            if price
            else {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0}
        )
        provider = {
            "baseUrl": self.upstream.base_url,
            "api": "anthropic-messages",
            "apiKey": KEY_VARIABLE,
            "models": [{"id": self.model, "cost": cost}],
        }
        (agent_dir / "models.json").write_text(json.dumps({"providers": {PROVIDER: provider}}))

    async def on_started(self) -> None:
        # The gateway retries transient upstream errors inside the turn (bounded, with backoff,
        # then a clear error). Pi's own retry would end the turn first and retry after it: the
        # next prompt would find Pi busy, and the old prompt's late answer would leak into it.
        await self._command("set_auto_retry", enabled=False)

    async def _command(self, kind: str, **fields: Any) -> None:
        self._ids += 1
        await self.send({"id": str(self._ids), "type": kind, **fields})

    # -- a turn --------------------------------------------------------------------------------

    async def run_turn(self, prompt: str) -> AsyncIterator[Event]:
        for notice in await self.prepare_turn():
            yield notice
        await self._command("prompt", message=prompt)
        usage = {
            "model": self.model,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_usd": 0.0,
            "num_turns": 0,
        }
        last_stop = ""
        while True:
            message = await self.read()
            if message is None:
                async for event in self.died():
                    yield event
                return
            kind = message.get("type")
            if kind == "message_update":
                update = message.get("assistantMessageEvent") or {}
                if update.get("type") == "text_delta":
                    yield ev.text(update.get("delta", ""))
            elif kind == "tool_execution_start":
                name, args = message.get("toolName", "?"), message.get("args") or {}
                yield ev.tool_call(
                    message.get("toolCallId", ""),
                    name,
                    TOOL_ACTIONS.get(name, "other"),
                    tool_summary(args),
                    args,
                )
            elif kind == "tool_execution_end":
                result = message.get("result") or {}
                yield ev.tool_result(
                    message.get("toolCallId", ""),
                    text_of(result.get("content")),
                    bool(message.get("isError")),
                )
            elif kind == "extension_ui_request":
                async for event in self._answer(message):
                    yield event
            elif kind == "message_end":
                body = message.get("message") or {}
                if body.get("role") == "assistant":
                    self._add_usage(usage, body)
                    last_stop = str(body.get("stopReason") or "")
                    if body.get("errorMessage"):
                        yield ev.error(f"Pi: {body['errorMessage']}")
            elif kind == "response" and not message.get("success", True):
                yield ev.error(f"Pi refused {message.get('command')}: {message.get('error')}")
                yield Event(EventKind.TURN_END, {"status": "error"})
                return
            elif kind == "agent_end":
                yield Event(EventKind.USAGE, usage)
                status = {"aborted": "interrupted", "error": "error"}.get(last_stop, "completed")
                yield Event(EventKind.TURN_END, {"status": status})
                return

    @staticmethod
    def _add_usage(usage: dict[str, Any], body: dict[str, Any]) -> None:
        reported = body.get("usage") or {}
        usage["model"] = body.get("model") or usage["model"]
        usage["input_tokens"] += reported.get("input", 0) or 0
        usage["output_tokens"] += reported.get("output", 0) or 0
        usage["cache_read_tokens"] += reported.get("cacheRead", 0) or 0
        usage["cache_write_tokens"] += reported.get("cacheWrite", 0) or 0
        usage["cost_usd"] += (reported.get("cost") or {}).get("total", 0) or 0
        usage["num_turns"] += 1

    async def _answer(self, message: dict[str, Any]) -> AsyncIterator[Event]:
        """The gate's confirm dialogs go to the decision function; other dialogs are declined."""
        method, ident = message.get("method"), message.get("id")
        if method != "confirm" or message.get("title") != "omnikernel-approval":
            if method in ("select", "confirm", "input", "editor"):
                await self.send({"type": "extension_ui_response", "id": ident, "cancelled": True})
            return
        try:
            request = json.loads(message.get("message") or "{}")
        except json.JSONDecodeError:
            request = {}
        name, args = request.get("toolName", "?"), request.get("input") or {}
        if is_notebook_tool(str(name)):  # the notebook server asks the decision function itself
            await self.send({"type": "extension_ui_response", "id": ident, "confirmed": True})
            return
        asked = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": ident,
                "call_id": request.get("toolCallId", ""),
                "tool": name,
                "action": TOOL_ACTIONS.get(name, "other"),
                "summary": tool_summary(args),
                "input": args,
            },
        )
        self.pending_approval = ident
        yield asked
        decision = await self.ctx.decide(asked)
        yield Event(
            EventKind.APPROVAL_DECISION,
            {
                "request_id": ident,
                "decision": decision.verdict,
                "reason": decision.reason,
                "by": decision.by,
            },
        )
        await self.send({"type": "extension_ui_response", "id": ident, "confirmed": decision.allow})
        self.pending_approval = None

    # -- stopping ------------------------------------------------------------------------------

    async def wind_down(self) -> list[Event]:
        """The ``abort`` command; Pi ends the turn with ``agent_end``."""
        if self.pending_approval is not None:
            await self.send(
                {"type": "extension_ui_response", "id": self.pending_approval, "confirmed": False}
            )
            self.pending_approval = None
        await self._command("abort")
        while (message := await self.read()) is not None:
            if message.get("type") == "extension_ui_request" and message.get("method") in (
                "select",
                "confirm",
                "input",
                "editor",
            ):
                await self.send(
                    {"type": "extension_ui_response", "id": message.get("id"), "cancelled": True}
                )  # a dialog racing the stop
            elif message.get("type") == "agent_end":
                return []
        raise HarnessError("Pi exited while stopping its turn")
