"""Scripts for the fake model: which answer a request gets. Pure, no I/O but `Scenario.load`.

A scenario is a list of rules and a fallback. A rule's `match` is a regular expression searched
(case-insensitively) in the request's *prompt*: the latest user message with real text, leaving
out tool results and tag-wrapped context that agents add (``<system-reminder>...``,
``<environment_context>...``). Its `steps` are the model's answers in order: step *i* answers
the request whose conversation has *i* assistant answers after that prompt. The choice is
stateless (the conversation picks the step), so any harness, retries and restarts work.

A step may hold `text` (streamed in chunks; ``{prompt}`` is replaced by the prompt),
`tool_calls`, `usage` (overrides the computed token counts), `chunk_delay` (seconds between
streamed chunks), `delay` (seconds before the answer starts: a slow model) and `error` (``{"status": 529, "type": "overloaded_error", "message": ...}``).
Tool calls are abstract and built from the tools the request offers:
``{"action": "shell", "command": "ls"}``, ``{"action": "write", "path": "a.py", "content": ""}``,
``{"action": "read", "path": "a.py"}``, ``{"action": "edit", "path", "old", "new"}``, an exact
``{"tool": "Name", "input": {...}}``, or an MCP server's tool, ``{"mcp": "notebook.kernel_run",
"input": {...}}``, found under each harness's spelling (``mcp__notebook__kernel_run``, ...);
where the request offers it only through a tool search (Codex, Qwen Code), the step first
searches for it (a search is not an answer: the same step then makes the call, through Qwen
Code's ``tool_call`` function where the tool stays deferred).

A rehearsal spends nothing, so the kernel's gateway meters its calls at $0, marked "rehearsal".
A scenario's top-level ``price_as`` (``"anthropic/claude-sonnet-4-5"``) asks for them to be
priced as that model instead, on purpose: to show or test a rule about dollars (a USD budget, a
``pause-every $N``) without an API key. Every place that shows the spend still says rehearsal.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from omnikernel.gateway.wire import (
    TOOL_SEARCH,
    Conversation,
    Reply,
    ToolCall,
    Usage,
)

#: Qwen Code's function that invokes a deferred tool its ``tool_search`` showed.
DEFERRED_CALL = "tool_call"

#: Tool names per abstract action, across Claude Code, Codex, Pi, Gemini CLI, Qwen Code and
#: OpenCode.
TOOL_ALIASES = {
    "shell": ("Bash", "bash", "shell", "exec_command", "shell_command", "local_shell",
              "run_shell_command"),
    "write": ("Write", "write", "write_file", "create_file"),
    "read": ("Read", "read", "read_file"),
    "edit": ("Edit", "edit", "edit_file", "replace"),
}  # fmt: skip
PATH_KEYS = ("file_path", "path", "filename")
DONE_TEXT = "Done."


@dataclasses.dataclass
class Rule:
    match: str
    steps: list[dict[str, Any]]

    def matches(self, prompt: str) -> bool:
        return re.search(self.match, prompt, re.IGNORECASE | re.DOTALL) is not None


FALLBACK_STEPS = [
    {
        "text": "This is the scripted fake model. No rule of its scenario matched your prompt:\n\n"
        "> {prompt}"
    }
]


@dataclasses.dataclass
class Scenario:
    rules: list[Rule] = dataclasses.field(default_factory=list)
    fallback: list[dict[str, Any]] = dataclasses.field(default_factory=lambda: FALLBACK_STEPS)
    name: str = ""
    price_as: str = ""  # see the module docstring

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        rules = [Rule(r["match"], list(r.get("steps", []))) for r in data.get("rules", [])]
        fallback = data.get("fallback", {}).get("steps") if data.get("fallback") else None
        return cls(
            rules, fallback or FALLBACK_STEPS, data.get("name", ""), str(data.get("price_as", ""))
        )

    @classmethod
    def load(cls, path: Path | str) -> Scenario:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read scenario {path}: {exc}") from None
        return cls.from_dict(data)

    def step_for(self, conversation: Conversation) -> dict[str, Any]:
        steps = next((r.steps for r in self.rules if r.matches(conversation.prompt)), None)
        steps = self.fallback if steps is None else steps
        if conversation.position < len(steps):
            return steps[conversation.position]
        return {"text": DONE_TEXT}


def estimate_tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def build_reply(
    step: dict[str, Any], conversation: Conversation, request_chars: int, ids: Any
) -> Reply:
    """Turn a scenario step into a concrete answer for this request's tools."""
    text = str(step.get("text", "")).replace("{prompt}", conversation.prompt)
    calls: list[ToolCall] = []
    for spec in step.get("tool_calls", []):
        call = build_tool_call(spec, conversation)
        if call is None:
            wanted = spec.get("tool") or spec.get("mcp") or spec.get("action")
            text += f"\n\n(The scripted model wanted a {wanted} tool, but none was offered.)"
        else:
            name, arguments = call
            space, short = conversation.namespaced.get(name, ("", name))
            calls.append(ToolCall(next(ids), short, arguments, space))
    out_chars = len(text) + sum(len(json.dumps(c.arguments)) for c in calls)
    usage = Usage(estimate_tokens(request_chars), estimate_tokens(out_chars))
    for key, value in (step.get("usage") or {}).items():
        setattr(usage, key, int(value))
    return Reply(
        text,
        calls,
        usage,
        float(step.get("chunk_delay", 0.0)),
        step.get("error"),
        float(step.get("delay", 0.0)),
    )


def build_tool_call(
    spec: dict[str, Any], conversation: Conversation
) -> tuple[str, dict[str, Any]] | None:
    tools = conversation.tools
    if "mcp" in spec:
        server, _, tool = str(spec["mcp"]).rpartition(".")
        found = next(
            (n for n in tools if n == f"mcp__{server}__{tool}"),
            next((n for n in tools if n.endswith(tool) and server in n), None),
        )
        if found:
            return found, dict(spec.get("input", {}))
        name = f"mcp__{server}__{tool}"
        if name in conversation.deferred and DEFERRED_CALL in tools:  # Qwen Code's
            return DEFERRED_CALL, {"name": name, "arguments": dict(spec.get("input", {}))}
        if TOOL_SEARCH in tools:  # Codex and Qwen Code defer MCP tools: search for it first
            return TOOL_SEARCH, {"query": f"{server} {tool}"}
        return None
    if "tool" in spec:
        return (spec["tool"], dict(spec.get("input", {}))) if spec["tool"] in tools else None
    action = spec.get("action", "")
    name = next((n for n in TOOL_ALIASES.get(action, ()) if n in tools), None)
    if name is None:
        return None
    props = (tools[name] or {}).get("properties", {})
    args: dict[str, Any] = {}

    def put(candidates: tuple[str, ...], value: Any) -> None:
        key = next((k for k in candidates if k in props), candidates[0])
        args[key] = value

    if action == "shell":
        command = spec["command"]
        key = next((k for k in ("command", "cmd") if k in props), "command")
        is_array = (props.get(key) or {}).get("type") == "array"
        args[key] = ["bash", "-lc", command] if is_array else command
        if "description" in props:
            args["description"] = spec.get("description", f"Run {command}")
    else:
        path = str(spec["path"])
        if conversation.cwd and not path.startswith("/"):
            path = f"{conversation.cwd.rstrip('/')}/{path}"
        put(PATH_KEYS, path)
        if action == "write":
            put(("content", "text"), spec.get("content", ""))
        elif action == "edit":
            put(("old_string", "oldText", "old_str"), spec.get("old", ""))
            put(("new_string", "newText", "new_str"), spec.get("new", ""))
    return name, args


def error_reply(step: dict[str, Any]) -> Reply:
    return Reply(error=dict(step["error"]))
