"""The rules over what reaches past the sandbox: git pushes through the broker, connections to
hosts, tools (MCP servers' among them), Python in the user's kernel and the open notebook.

``push-own-branches`` / ``push-branch``, ``allow-host`` / ``deny-host``, ``ask-python``,
``allow-tool`` / ``ask-tool`` / ``deny-tool`` and ``read-only-file``: see
`omnikernel.policy.rules` for what each does and how they are named in policy files.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
from typing import ClassVar

from omnikernel.policy import hosts
from omnikernel.policy.rule import Match, Outcome, PolicyState, Request, Rule, RuleError

LIKELY_DEFAULT_BRANCHES = ("main", "master")


@dataclasses.dataclass(frozen=True)
class PushOwnBranches(Rule):
    name: ClassVar[str] = "push-own-branches"
    help: ClassVar[str] = (
        "a brokered git push may update only branches the session created or a push-branch "
        "rule names; others ask; a force update of the default branch is denied"
    )

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or request.action != "push" or not request.refs:
            return None
        defaults = (request.default_branch,) if request.default_branch else LIKELY_DEFAULT_BRANCHES
        asks: list[str] = []
        for ref, kind in request.refs:
            branch = ref.removeprefix("refs/heads/")
            is_branch = ref.startswith("refs/heads/")
            if is_branch and branch in defaults and kind in ("force", "delete"):
                what = "a deletion" if kind == "delete" else "a force update"
                return self._match(
                    Outcome.DENY,
                    f"{what} of {request.remote}'s default branch {branch!r} is refused "
                    "(it rewrites what everyone builds on)",
                    f"push {request.remote} {branch}",
                )
            own = (
                kind == "create"
                or (request.remote, ref) in state.own_branches
                or any(fnmatch.fnmatchcase(branch, p) for p in state.push_patterns)
            )
            if not (is_branch and own) or (branch in defaults and kind == "maybe-force"):
                kind_text = {"maybe-force": "may be a force update: the pack does not show a "
                             "fast-forward"}.get(kind, kind)  # fmt: skip
                asks.append(f"{branch} ({kind_text})")
        if asks:
            return self._match(
                Outcome.ASK,
                f"a git push to {request.remote} updates {', '.join(asks)}: not a branch this "
                "session created or a push-branch rule names",
                f"push {request.remote} " + " ".join(sorted(r for r, _ in request.refs)),
            )
        return self._match(
            Outcome.ALLOW,
            f"a git push to {request.remote} of the session's own branches "
            f"({', '.join(r.removeprefix('refs/heads/') for r, _ in request.refs)})",
            f"push {request.remote}",
        )

    def state_text(self, state: PolicyState) -> str:
        own = sorted({r.removeprefix("refs/heads/") for _, r in state.own_branches})
        return f"own branches: {', '.join(own)}" if own else "no branch pushed yet"


@dataclasses.dataclass(frozen=True)
class PushBranch(Rule):
    name: ClassVar[str] = "push-branch"
    params: ClassVar[tuple[str, ...]] = ("pattern",)
    help: ClassVar[str] = "branches matching PATTERN (agent/*) count as the session's own"
    pattern: str = ""

    def __post_init__(self) -> None:
        pattern = str(self.pattern).strip().removeprefix("refs/heads/")
        if not pattern or " " in pattern:
            raise RuleError(f"push-branch needs a branch name or glob (agent/*), not {pattern!r}")
        object.__setattr__(self, "pattern", pattern)

    def check(self, request: Request, state: PolicyState) -> Match | None:
        return None  # push-own-branches reads the patterns (see `engine.judge`)


@dataclasses.dataclass(frozen=True)
class HostRule(Rule):
    params: ClassVar[tuple[str, ...]] = ("pattern",)
    outcome: ClassVar[Outcome] = Outcome.ALLOW
    pattern: str = ""

    def __post_init__(self) -> None:
        try:
            hosts.check(self.pattern)
        except hosts.HostPatternError as exc:
            raise RuleError(str(exc)) from None

    def describe(self) -> str:
        return f"{self.name} {self.pattern}"

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "network" or not hosts.matches(self.pattern, request.host, request.port):
            return None
        verb = "allows" if self.outcome == Outcome.ALLOW else "denies"
        return self._match(
            self.outcome, f"{self.level} rule {verb} {request.host}:{request.port}", request.host
        )


@dataclasses.dataclass(frozen=True)
class AllowHost(HostRule):
    name: ClassVar[str] = "allow-host"
    help: ClassVar[str] = "connections to hosts matching PATTERN (or a preset: @pypi) are allowed"


@dataclasses.dataclass(frozen=True)
class DenyHost(HostRule):
    name: ClassVar[str] = "deny-host"
    outcome: ClassVar[Outcome] = Outcome.DENY
    help: ClassVar[str] = "connections to hosts matching PATTERN (or a preset) are denied"


def qualified_tool(tool: str) -> str:
    """An MCP tool's name as policies write it, ``server.tool``, from the harnesses' spellings
    (Claude Code's and Codex's ``mcp__server__tool``); any other tool's name as it is."""
    if tool.startswith("mcp__") and "__" in tool[5:]:
        server, _, name = tool[5:].partition("__")
        return f"{server}.{name}"
    return tool


@dataclasses.dataclass(frozen=True)
class AskPython(Rule):
    name: ClassVar[str] = "ask-python"
    help: ClassVar[str] = (
        "Python an agent runs in the user's kernel (outside the sandbox) asks; on by default"
    )

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or request.action != "python":
            return None
        return self._match(
            Outcome.ASK,
            f"{qualified_tool(request.tool) or 'the agent'} runs Python in your kernel, "
            "outside the sandbox",
            qualified_tool(request.tool),
        )


@dataclasses.dataclass(frozen=True)
class ToolRule(Rule):
    params: ClassVar[tuple[str, ...]] = ("tool",)
    outcome: ClassVar[Outcome] = Outcome.ASK
    tool: str = ""

    def __post_init__(self) -> None:
        if not str(self.tool).strip():
            raise RuleError(f"{self.name} needs a tool name, e.g. notebook.kernel_run or github.*")

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or not request.tool:
            return None
        name = qualified_tool(request.tool)
        if not fnmatch.fnmatchcase(name, self.tool):
            return None
        return self._match(self.outcome, f"the tool {name} matches {self.tool!r}", name)


@dataclasses.dataclass(frozen=True)
class AllowTool(ToolRule):
    name: ClassVar[str] = "allow-tool"
    outcome: ClassVar[Outcome] = Outcome.ALLOW
    help: ClassVar[str] = "the tool NAME (server.tool for MCP tools; globs) is allowed"


@dataclasses.dataclass(frozen=True)
class AskTool(ToolRule):
    name: ClassVar[str] = "ask-tool"
    help: ClassVar[str] = "the tool NAME (server.tool for MCP tools; globs) asks"


@dataclasses.dataclass(frozen=True)
class DenyTool(ToolRule):
    name: ClassVar[str] = "deny-tool"
    outcome: ClassVar[Outcome] = Outcome.DENY
    help: ClassVar[str] = "the tool NAME (server.tool for MCP tools; globs) is denied"


@dataclasses.dataclass(frozen=True)
class ReadOnlyFile(Rule):
    name: ClassVar[str] = "read-only-file"
    params: ClassVar[tuple[str, ...]] = ("path",)
    help: ClassVar[str] = "writing or editing the file PATH is denied"
    path: str = ""
    #: Said to the agent besides the denial (the open notebook's points to notebook_insert_cell).
    hint: str = ""

    def __post_init__(self) -> None:
        if not self.path or not posixpath.isabs(self.path):
            raise RuleError(f"read-only-file needs an absolute path, not {self.path!r}")
        object.__setattr__(self, "path", posixpath.normpath(self.path))

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or request.action not in ("write", "edit"):
            return None
        if self.path not in (posixpath.normpath(p) for p in request.paths):
            return None
        return self._match(
            Outcome.DENY, f"{self.path} is read-only for agents{self.hint}", self.path
        )
