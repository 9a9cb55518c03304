"""An agent's turn as a Python value: what `_agent` (and `%%agent NAME --out VAR`) hold.

Built from the turn's stored events (so it says exactly what the cell showed) plus a before and
after look at the notebook's folder, which catches every file the turn created or changed,
also those a shell command wrote, not only those of write and edit tools.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omnikernel.events import Event, EventKind

#: Folders a look at the notebook's folder skips (VCS data, dependencies, caches).
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".ipynb_checkpoints", ".venv"})
#: Entries looked at, at most: a huge folder costs a bounded time before and after each turn.
MAX_ENTRIES = 20_000

Snapshot = dict[str, tuple[int, int]]  # relative path -> (mtime_ns, size)


def snapshot(folder: Path, limit: int = MAX_ENTRIES) -> Snapshot:
    """Every file under `folder` (skipping `SKIPPED_DIRS`), with its mtime and size."""
    seen: Snapshot = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            seen[os.path.relpath(path, folder)] = (st.st_mtime_ns, st.st_size)
            if len(seen) >= limit:
                return seen
    return seen


def changed_files(before: Snapshot, after: Snapshot) -> tuple[list[str], list[str]]:
    """(created, changed) between two snapshots, sorted."""
    created = sorted(p for p in after if p not in before)
    changed = sorted(p for p in after if p in before and after[p] != before[p])
    return created, changed


@dataclasses.dataclass
class ToolCall:
    tool: str
    action: str
    summary: str
    output: str = ""
    is_error: bool = False

    def __repr__(self) -> str:
        mark = " ✗" if self.is_error else ""
        return f"ToolCall({self.tool}: {self.summary[:60]!r}{mark})"


@dataclasses.dataclass
class AgentResult:
    """One agent turn: its answer, tool calls, the files it created or changed, its spend."""

    text: str
    harness: str = ""
    model: str = ""
    status: str = ""
    turn: int = 0
    session_id: str = ""
    prompt: str = ""
    tool_calls: list[ToolCall] = dataclasses.field(default_factory=list)
    files_created: list[str] = dataclasses.field(default_factory=list)
    files_changed: list[str] = dataclasses.field(default_factory=list)
    cost_usd: float | None = None
    #: Answered by the offline rehearsal model: the cost is $0, nothing was spent.
    rehearsal: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    folder: str = ""

    @property
    def files(self) -> list[str]:
        """Created and changed files, relative to the notebook's folder."""
        return self.files_created + self.files_changed

    def paths(self) -> list[Path]:
        """The same files as absolute paths, to open from Python."""
        return [Path(self.folder) / f for f in self.files]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        answer = self.text.strip().replace("\n", " ")
        answer = answer[:80] + ("..." if len(answer) > 80 else "")
        parts = [f"{self.harness} turn {self.turn}", self.status]
        parts.append(f"{len(self.tool_calls)} tool call{'s' * (len(self.tool_calls) != 1)}")
        if self.files:
            shown = ", ".join(self.files[:5]) + (", ..." if len(self.files) > 5 else "")
            parts.append(f"files: {shown}")
        if self.rehearsal and not self.cost_usd:
            parts.append("$0 (rehearsal)")
        elif self.cost_usd is not None:
            parts.append(f"${self.cost_usd:.4f}")
        return f"AgentResult({' · '.join(parts)}: {answer!r})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def result_from_events(
    events: Iterable[Event], *, folder: Path, before: Snapshot, after: Snapshot
) -> AgentResult:
    """The `AgentResult` of one turn's stored events."""
    result = AgentResult(text="", folder=str(folder))
    text: list[str] = []
    calls: dict[str, ToolCall] = {}
    costs: list[float] = []
    for event in events:
        data = event.data
        result.harness, result.turn = event.harness, event.turn
        result.session_id = event.session_id
        if event.kind == EventKind.TURN_START:
            result.prompt, result.model = data.get("prompt", ""), data.get("model") or ""
        elif event.kind == EventKind.TEXT:
            text.append(data.get("text", ""))
        elif event.kind == EventKind.TOOL_CALL:
            if text and not text[-1].endswith("\n"):
                text.append("\n\n")  # text blocks either side of a tool call are paragraphs
            call = ToolCall(
                str(data.get("tool", "")), str(data.get("action", "")), str(data.get("summary", ""))
            )
            calls[data.get("call_id", str(len(calls)))] = call
            result.tool_calls.append(call)
        elif event.kind == EventKind.TOOL_RESULT:
            if (call := calls.get(data.get("call_id", ""))) is not None:
                call.output, call.is_error = str(data.get("output", "")), bool(data.get("is_error"))
        elif event.kind == EventKind.USAGE:
            result.model = data.get("model") or result.model
        elif event.kind == EventKind.SPEND:
            result.input_tokens += int(data.get("input_tokens") or 0)
            result.output_tokens += int(data.get("output_tokens") or 0)
            if data.get("cost_usd") is not None:
                costs.append(float(data["cost_usd"]))
            result.rehearsal = bool(data.get("rehearsal"))
            result.model = result.model or data.get("model") or ""
        elif event.kind == EventKind.TURN_END:
            result.status = data.get("status", "")
    result.text = "".join(text).strip()
    result.cost_usd = round(sum(costs), 6) if costs else None
    result.files_created, result.files_changed = changed_files(before, after)
    return result
