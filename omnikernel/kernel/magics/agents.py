"""`%agent`, `%agents`, `%history`: which agent answers, and what it said.

IPython line magics acting on the kernel's `AgentSession` (see `omnikernel.kernel.magics`)."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.display import display

from omnikernel.harnesses import Harness, HarnessError
from omnikernel.harnesses.acp import AcpHarness
from omnikernel.kernel.hub import current_user
from omnikernel.kernel.magics.common import (
    SessionMagicsBase,
    parse_agent_args,
    show,
    table,
    turn_cost,
)
from omnikernel.sandbox import SandboxUnavailableError
from omnikernel.sandbox import resolve as resolve_sandbox


@magics_class
class AgentMagics(SessionMagicsBase):
    @line_magic
    def agent(self, line: str) -> None:
        """%agent: show the current harness and model. %agent NAME [--model M]: switch."""
        args = parse_agent_args(line)
        name, model = args.name, args.model
        session = self.session
        if name is None and model is not None:
            name = session.current
        if name is not None:
            try:
                session.switch(name, model)
            except HarnessError as exc:
                raise UsageError(str(exc)) from None
            session.prewarm()  # its CLI comes up while the user writes the next prompt
        current = session.current
        cls = session.available[current]
        model_now = session.model_of(current) or cls.default_model or "the CLI's default model"
        upstream = session.upstream_label(cls.wire, current)
        credential = session.credential_label(current)
        verb = "Switched to" if name is not None else "Current harness:"
        show(
            f"{verb} {current} ({cls.display_name}), model: {model_now}, upstream: {upstream}, "
            f"credential: {credential}",
            f"{verb} **{current}** ({cls.display_name}) · model: `{model_now}` · "
            f"upstream: {upstream} · credential: {credential}",
        )

    @line_magic
    def agents(self, line: str) -> None:
        """%agents: every installed harness adapter, its CLI, version, upstream, install."""
        session = self.session
        rows = []
        try:
            backend = resolve_sandbox(session.sandbox)
            sandbox = backend.name if backend else "OFF (opted out)"
        except SandboxUnavailableError:
            sandbox = "none available: agents refuse to start (see %sandbox)"
        for name, cls in session.available.items():
            info = cls.probe(session.harness_paths.get(name))
            rows.append(
                [
                    ("➤ " if name == session.current else "") + name,
                    cls.display_name,
                    "yes" if info.installed else "no",
                    info.version or "-",
                    info.binary or "-",
                    session.upstream_label(cls.wire, name),
                    session.credential_label(name),
                    sandbox,
                    mcp_text(cls),
                    info.install,
                ]
            )
        headers = [
            "harness",
            "agent",
            "installed",
            "version",
            "binary",
            "upstream",
            "credential",
            "sandbox",
            "notebook tools (MCP)",
            "install",
        ]
        display(table(headers, rows), raw=True)

    @line_magic
    def history(self, line: str) -> None:
        """%history: this session's agent turns (prompt, harness, tools, tokens, cost, status)."""
        turns = self.session.turns()
        if not turns:
            show("No agent turns in this session yet: run a prompt cell first.")
            return
        rows = []
        owner = current_user()
        for t in turns:
            prompt = str(t["prompt"]).replace("\n", " ")
            cost = t["cost_usd"]
            rows.append(
                [
                    t["turn"],
                    t["harness"],
                    prompt[:60] + ("..." if len(prompt) > 60 else ""),
                    t["tools"],
                    t["tokens"],
                    turn_cost(cost, bool(t.get("rehearsal"))),
                    t["status"],
                    t["by"] or owner,
                    ", ".join(t["decided_by"]) or "-",
                ]
            )
        headers = ["turn", "harness", "prompt", "tool calls", "tokens", "cost", "status"]
        display(table([*headers, "prompt by", "approvals by"], rows), raw=True)


def mcp_text(cls: type[Harness]) -> str:
    """Whether a harness gets the kernel's notebook tools and the user's MCP servers."""
    if cls.no_mcp:
        return f"no: {cls.no_mcp}"
    if cls.mcp_note:
        return f"yes, {cls.mcp_note}"
    if issubclass(cls, AcpHarness):
        return "yes, if the agent takes HTTP MCP servers (ACP mcpCapabilities.http)"
    return "yes"
