"""Codex, driven through `codex app-server` (JSON-RPC 2.0 over stdio).

`codex exec` cannot ask for approval, so the app server it is: ``initialize`` /
``initialized``, one ``thread/start`` per session (``thread/resume`` after a restart), then
``turn/start`` per prompt and ``turn/interrupt`` to stop. With the ``untrusted`` approval policy
Codex asks before every command and file change (``item/commandExecution/requestApproval``,
``item/fileChange/requestApproval``) and MCP tool call (``mcpServer/elicitation/request``); the
session's decision function answers.

Codex runs with its own sandbox off (``danger-full-access``): it cannot nest inside ours, and
ours is the one that holds (see `omnikernel.sandbox`). Its config lives in a private
``CODEX_HOME`` that points the model provider at the gateway (Responses API), with analytics,
plugins and update checks off, so it talks to nothing else.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from omnikernel import __version__
from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.harnesses.base import HarnessContext, HarnessError
from omnikernel.harnesses.jsonl import JsonRpcHarness
from omnikernel.harnesses.mcp import NOTEBOOK_SERVER, codex_config

#: The key variable Codex reads for our provider (it holds the session secret the gateway issued).
KEY_VARIABLE = "OMNIKERNEL_CODEX_KEY"
DEFAULT_MODEL = "gpt-5.5"


#: The platform package and target of the native binary the npm launcher starts.
NATIVE_PACKAGES = {
    ("Linux", "x86_64"): ("@openai/codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("Linux", "aarch64"): ("@openai/codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("Darwin", "x86_64"): ("@openai/codex-darwin-x64", "x86_64-apple-darwin"),
    ("Darwin", "arm64"): ("@openai/codex-darwin-arm64", "aarch64-apple-darwin"),
}


def native_binary(launcher: str) -> tuple[str, Path] | None:
    """(the native binary, the npm package's root) that npm's `codex` launcher (`bin/codex.js`)
    would start, or None when `launcher` is not that script or the binary is missing.

    On node < 22.15 the launcher cannot `execve` and stays alive as the binary's parent for
    the whole session: a second process (about 40 MiB RSS) and a node start-up (tens of ms)
    per CLI start. Starting the binary ourselves, with the variables the launcher sets,
    saves both."""
    real = Path(os.path.realpath(launcher))
    if real.name != "codex.js" or real.parent.name != "bin":
        return None
    root = real.parent.parent
    package = NATIVE_PACKAGES.get((platform.system(), platform.machine()))
    if package is None:
        return None
    name, target = package
    modules = [root / "node_modules", *(p for p in root.parents if p.name == "node_modules")]
    for vendor in [m / name / "vendor" for m in modules] + [root / "vendor"]:
        binary = vendor / target / "bin" / "codex"
        if os.access(binary, os.X_OK):
            return str(binary), root
    return None


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


#: The model provider (the gateway) in the private config.toml.
PROVIDER_ID = "omnikernel"
PROVIDER_KEYS = ("model_provider", "model_provider_id")


def _with_provider(value: Any, provider: str) -> Any:
    """`value` (a rollout record) with every model provider it names made `provider`."""
    if isinstance(value, dict):
        return {
            k: provider
            if k in PROVIDER_KEYS and isinstance(v, str)
            else _with_provider(v, provider)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_with_provider(v, provider) for v in value]
    return value


class CodexHarness(JsonRpcHarness):
    name = "codex"
    display_name = "Codex"
    binary_name = "codex"
    npm_package = "@openai/codex"
    pinned_version = "0.169.0"
    wire = "openai"
    #: The answer's delta notifications (no id: nothing to answer); `run_turn` only yields
    #: their text.
    text_line_prefixes = (b'{"method":"item/agentMessage/delta"',)

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._thread: str | None = None
        #: Codex keeps a thread (its rollout file) only once a turn ran in it: a CLI restarted
        #: before that (a sandbox setting changed after the warm start) starts a new thread.
        self._thread_ran = False
        self._turn: str | None = None
        self._turn_request: int | None = None  # the id of the running turn's turn/start
        #: The pending approval is an MCP tool call's elicitation (answered with an action).
        self._pending_mcp = False

    default_model = DEFAULT_MODEL

    @property
    def model(self) -> str:
        return self.ctx.model or DEFAULT_MODEL

    def command(self, binary: str) -> list[str]:
        native = native_binary(binary)
        return [native[0] if native else binary, "app-server", "--disable", "plugins"]

    def adopt_session(self, native_id: str, source: Path) -> bool:
        """Codex resumes a thread (``thread/resume``) from its rollout file under
        ``sessions/YYYY/MM/DD/`` in ``CODEX_HOME``, found by the thread id in its name. The
        copy names this harness's model provider (the gateway) where the terminal's named its
        own: Codex refuses a thread whose provider it has no configuration for."""
        dated = source.parent.relative_to(source.parents[3]) if len(source.parents) > 3 else Path()
        target = self.private_dirs()["config"] / "sessions" / dated / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for line in source.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                lines.append(line)
                continue
            lines.append(json.dumps(_with_provider(record, PROVIDER_ID)))
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._thread, self._thread_ran = native_id, True  # its rollout is the copy
        return True

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        self._write_config(dirs["config"])
        launcher = self.find_binary(self.ctx.binary)
        native = native_binary(launcher) if launcher else None
        # What npm's launcher tells the binary about its install (update hints).
        managed = {"CODEX_MANAGED_BY_NPM": "1", "CODEX_MANAGED_PACKAGE_ROOT": str(native[1])}
        return {
            **self.base_environment(dirs),
            **(managed if native else {}),
            "CODEX_HOME": str(dirs["config"]),
            KEY_VARIABLE: self.ctx.upstream.api_key,
        }

    def _write_config(self, codex_home: Any) -> None:
        (codex_home / "config.toml").write_text(
            f"model = {toml_string(self.model)}\n"
            f'model_provider = "{PROVIDER_ID}"\n'
            "check_for_update_on_startup = false\n"
            "[analytics]\nenabled = false\n"
            f"[model_providers.{PROVIDER_ID}]\n"
            'name = "omnikernel gateway"\n'
            f"base_url = {toml_string(self.upstream.base_url)}\n"
            f'env_key = "{KEY_VARIABLE}"\n'
            'wire_api = "responses"\n' + codex_config(self.mcp_servers)
        )

    async def on_started(self) -> None:
        await self.call(
            "initialize", {"clientInfo": {"name": "omnikernel", "version": __version__}}
        )
        await self.notify("initialized")
        settings = {
            "cwd": str(self.ctx.cwd),
            "approvalPolicy": "untrusted",
            "sandbox": "danger-full-access",
            "model": self.model,
        }
        if self._thread and self._thread_ran:
            result = await self.call("thread/resume", {"threadId": self._thread, **settings})
        else:
            result = await self.call("thread/start", settings)
        self._thread = result["thread"]["id"]

    # -- a turn --------------------------------------------------------------------------------

    async def run_turn(self, prompt: str) -> AsyncIterator[Event]:
        for notice in await self.prepare_turn():
            yield notice
        self._turn = None
        self._thread_ran = True
        started = self._turn_request = await self.request(
            "turn/start", {"threadId": self._thread, "input": [{"type": "text", "text": prompt}]}
        )
        usage = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
        }
        streamed: set[str] = set()
        while True:
            message = await self.read()
            if message is None:
                async for event in self.died(self._thread):
                    yield event
                return
            method = message.get("method", "")
            params = message.get("params") or {}
            if message.get("id") == started and "method" not in message:
                if "error" in message:
                    yield ev.error(f"Codex refused the turn: {message['error'].get('message')}")
                    yield Event(
                        EventKind.TURN_END, {"status": "error", "harness_session": self._thread}
                    )
                    return
                self._turn = (message.get("result") or {}).get("turn", {}).get("id")
            elif "id" in message and method:
                async for event in self._answer(message):
                    yield event
            elif method == "item/agentMessage/delta":
                streamed.add(params.get("itemId", ""))
                yield ev.text(params.get("delta", ""))
            elif method == "item/started":
                if event := self._item_started(params.get("item") or {}):
                    yield event
            elif method == "item/completed":
                if event := self._item_completed(params.get("item") or {}, streamed):
                    yield event
            elif method == "thread/tokenUsage/updated":
                last = (params.get("tokenUsage") or {}).get("last") or {}
                cached = last.get("cachedInputTokens", 0) or 0
                usage["input_tokens"] += max(0, (last.get("inputTokens", 0) or 0) - cached)
                usage["output_tokens"] += last.get("outputTokens", 0) or 0
                usage["cache_read_tokens"] += cached
                usage["cache_write_tokens"] += last.get("cacheWriteInputTokens", 0) or 0
            elif method == "error" and not params.get("willRetry"):
                error = params.get("error") or {}
                yield ev.error(f"Codex: {error.get('message', 'unknown error')}")
            elif method == "turn/completed":
                for event in self._turn_completed(params.get("turn") or {}, usage):
                    yield event
                return

    def _item_started(self, item: dict[str, Any]) -> Event | None:
        kind = item.get("type")
        if kind == "commandExecution":
            command = self._command_of(item)
            return ev.tool_call(item.get("id", ""), "shell", "exec", command, {"command": command})
        if kind == "fileChange":
            changes = item.get("changes") or []
            paths = ", ".join(str(c.get("path", "?")) for c in changes)
            action = (
                "write"
                if all(
                    c.get("kind", {}).get("type") == "add"
                    for c in changes
                    if isinstance(c.get("kind"), dict)
                )
                else "edit"
            )
            return ev.tool_call(
                item.get("id", ""), "apply_patch", action, paths, {"changes": changes}
            )
        if kind in ("mcpToolCall", "dynamicToolCall"):
            tool = str(item.get("tool") or item.get("name") or kind)
            return ev.tool_call(
                item.get("id", ""), tool, "other", tool, item.get("arguments") or {}
            )
        if kind == "webSearch":
            query = str(item.get("query", ""))
            return ev.tool_call(item.get("id", ""), "web_search", "fetch", query, {"query": query})
        return None

    def _item_completed(self, item: dict[str, Any], streamed: set[str]) -> Event | None:
        kind = item.get("type")
        if kind == "agentMessage" and item.get("id") not in streamed and item.get("text"):
            return ev.text(item["text"])
        if kind == "commandExecution":
            code = item.get("exitCode")
            failed = item.get("status") in ("failed", "declined") or code not in (0, None)
            output = item.get("aggregatedOutput") or ""
            if item.get("status") == "declined":
                output = output or "declined"
            return ev.tool_result(item.get("id", ""), output, failed)
        if kind == "fileChange":
            status = str(item.get("status", ""))
            return ev.tool_result(item.get("id", ""), status, status in ("failed", "declined"))
        if kind in ("mcpToolCall", "dynamicToolCall", "webSearch"):
            result = item.get("result") or item.get("error") or ""
            return ev.tool_result(
                item.get("id", ""), json.dumps(result) if result else "", bool(item.get("error"))
            )
        return None

    @staticmethod
    def _command_of(item: dict[str, Any]) -> str:
        actions = item.get("commandActions") or []
        if len(actions) == 1 and actions[0].get("command"):
            return str(actions[0]["command"])
        return str(item.get("command", ""))

    def _turn_completed(self, turn: dict[str, Any], usage: dict[str, int]) -> list[Event]:
        status = {"completed": "completed", "interrupted": "interrupted"}.get(
            turn.get("status", ""), "error"
        )
        out = [
            Event(EventKind.USAGE, {"model": self.model, **usage, "cost_usd": None, "num_turns": 1})
        ]
        if status == "error":
            detail = (turn.get("error") or {}).get("message") or turn.get("status")
            out.append(ev.error(f"Codex ended the turn with an error: {detail}"))
        out.append(Event(EventKind.TURN_END, {"status": status, "harness_session": self._thread}))
        self._turn = None
        return out

    async def _answer(self, message: dict[str, Any]) -> AsyncIterator[Event]:
        """Serve a request from Codex: approvals go to the decision function."""
        method, params, ident = message["method"], message.get("params") or {}, message["id"]
        if method == "mcpServer/elicitation/request":
            async for event in self._answer_mcp(params, ident):
                yield event
            return
        if method not in (
            "item/commandExecution/requestApproval",
            "item/fileChange/requestApproval",
        ):
            await self.refuse(ident, method)
            return
        is_command = method.startswith("item/commandExecution")
        summary = (
            self._command_of(params)
            if is_command
            else str(params.get("reason") or params.get("itemId", ""))
        )
        asked = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": str(ident),
                "call_id": params.get("itemId", ""),
                "tool": "shell" if is_command else "apply_patch",
                "action": "exec" if is_command else "edit",
                "summary": summary,
                "input": {"command": summary, "cwd": params.get("cwd")} if is_command else params,
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
        await self.respond(ident, {"decision": "accept" if decision.allow else "decline"})
        self.pending_approval = None

    async def _answer_mcp(self, params: dict[str, Any], ident: Any) -> AsyncIterator[Event]:
        """Codex asks before each MCP tool call with an elicitation whose ``_meta`` names the
        tool (``codex_approval_kind: mcp_tool_call``). The kernel's notebook server asks the
        decision function itself, so its calls are accepted here; any other server's go to the
        decision function as ``mcp__SERVER__TOOL`` (policies name it ``SERVER.TOOL``). Other
        elicitations (a server asking the user for input) are declined: nobody fills forms."""
        meta = params.get("_meta") or {}
        server, tool = str(params.get("serverName", "")), str(meta.get("tool_name", ""))
        if meta.get("codex_approval_kind") != "mcp_tool_call" or not tool:
            await self.respond(ident, {"action": "decline"})
            return
        if server == NOTEBOOK_SERVER:
            await self.respond(ident, {"action": "accept"})
            return
        arguments = meta.get("tool_params") if isinstance(meta.get("tool_params"), dict) else {}
        asked = Event(
            EventKind.APPROVAL_REQUEST,
            {
                "request_id": str(ident),
                "call_id": "",
                "tool": f"mcp__{server}__{tool}",
                "action": "other",
                "summary": json.dumps(arguments, ensure_ascii=False)[:200],
                "input": arguments,
            },
        )
        self.pending_approval, self._pending_mcp = ident, True
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
        await self.respond(ident, {"action": "accept" if decision.allow else "decline"})
        self.pending_approval, self._pending_mcp = None, False

    # -- stopping ------------------------------------------------------------------------------

    async def wind_down(self) -> list[Event]:
        """``turn/interrupt`` (once the turn's id is known); Codex ends with ``turn/completed``."""
        if self.pending_approval is not None:
            answer = {"action": "decline"} if self._pending_mcp else {"decision": "decline"}
            await self.respond(self.pending_approval, answer)
            self.pending_approval = None
        asked = False
        while True:
            if self._turn and not asked:
                await self.request(
                    "turn/interrupt", {"threadId": self._thread, "turnId": self._turn}
                )
                asked = True
            message = await self.read()
            if message is None:
                raise HarnessError("Codex exited while stopping its turn")
            if message.get("id") == self._turn_request and "method" not in message:
                if "error" in message:
                    return []  # the turn never started
                self._turn = (message.get("result") or {}).get("turn", {}).get("id")
            elif "id" in message and message.get("method"):
                await self.respond(message["id"], {"decision": "decline"})  # one racing the stop
            elif message.get("method") == "turn/completed":
                self._turn = None
                return []
