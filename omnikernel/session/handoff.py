"""Carrying the conversation across harnesses, and asking one agent to review another. Pure.

When a prompt goes to a harness that has not seen the latest turns (`%agent codex` after a few
Claude turns), the session hands over what happened since it last took part: each turn's
prompt, the tool calls, the files touched and the answer, condensed to fit, newest first to
survive. The handover is wrapped in an ``<omnigent-handoff>`` tag ahead of the prompt, and
the cell shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from omnikernel.events import Event, EventKind
from omnikernel.view.render import edit_diff

TAG = "omnigent-handoff"
#: How much a handover may take of the prompt, in characters (about 2,000 tokens).
BUDGET_CHARS = 8000
ANSWER_CHARS = 1200
MAX_TOOL_LINES = 12
DIFF_LINES = 60


@dataclasses.dataclass
class Turn:
    number: int
    harness: str
    prompt: str = ""
    answer: str = ""
    status: str = ""
    tools: list[str] = dataclasses.field(default_factory=list)
    files: list[str] = dataclasses.field(default_factory=list)
    changes: list[str] = dataclasses.field(default_factory=list)  # diffs / new contents


@dataclasses.dataclass(frozen=True)
class Handoff:
    text: str
    turns: int
    harnesses: tuple[str, ...]
    files: tuple[str, ...]

    @property
    def summary(self) -> str:
        who = ", ".join(self.harnesses)
        files = f"; files touched: {', '.join(self.files)}" if self.files else ""
        return f"{self.turns} earlier turn{'s' * (self.turns != 1)} by {who}{files}"


def turns_of(events: Iterable[Event]) -> list[Turn]:
    """The session's turns, oldest first, from its events."""
    turns: dict[int, Turn] = {}
    for e in events:
        turn = turns.setdefault(e.turn, Turn(e.turn, e.harness))
        if e.kind == EventKind.TURN_START:
            turn.prompt = str(e.data.get("prompt", ""))
        elif e.kind == EventKind.TEXT:
            turn.answer += str(e.data.get("text", ""))
        elif e.kind == EventKind.TOOL_CALL:
            turn.tools.append(f"{e.data.get('tool')} {e.data.get('summary', '')}".strip())
            if e.data.get("action") in ("write", "edit") and e.data.get("summary"):
                turn.files.append(str(e.data["summary"]))
                if change := change_of(e.data):
                    turn.changes.append(change)
        elif e.kind == EventKind.TURN_END:
            turn.status = str(e.data.get("status", ""))
    return [turns[k] for k in sorted(turns)]


def change_of(call: dict[str, object]) -> str:
    """What a write or edit did, as a short diff."""
    data = call.get("input") or {}
    assert isinstance(data, dict)
    if isinstance(data.get("content"), str):
        path = str(call.get("summary", ""))
        body = str(data["content"]).splitlines()[:DIFF_LINES]
        return "\n".join([f"+++ {path} (new contents)"] + [f"+{line}" for line in body])
    return edit_diff(dict(call), DIFF_LINES)


def describe(turn: Turn, answer_chars: int = ANSWER_CHARS) -> str:
    lines = [
        f"Turn {turn.number} ({turn.harness}, {turn.status or 'unfinished'}): "
        f"the user asked: {turn.prompt.strip()}"
    ]
    if turn.tools:
        shown = turn.tools[:MAX_TOOL_LINES]
        more = len(turn.tools) - len(shown)
        lines.append("  Tool calls: " + "; ".join(shown) + (f"; and {more} more" if more else ""))
    answer = turn.answer.strip()
    if answer:
        if len(answer) > answer_chars:
            answer = answer[: answer_chars // 2] + " [...] " + answer[-answer_chars // 2 :]
        lines.append(f"  Answer: {answer}")
    return "\n".join(lines)


def build_handoff(
    events: Iterable[Event],
    for_harness: str,
    budget: int = BUDGET_CHARS,
    since: int | None = None,
) -> Handoff | None:
    """What `for_harness` missed, or None if it missed nothing: the turns after `since`, the
    last turn its running process took part in (0 for a process that knows nothing, as after
    a kernel restart); by default, its last turn in the events."""
    turns = turns_of(events)
    if since is None:
        since = max((t.number for t in turns if t.harness == for_harness), default=0)
    missed = [t for t in turns if t.number > since and t.prompt]
    if not missed:
        return None
    parts: list[str] = []
    used = 0
    for turn in reversed(missed):  # newest first: they matter most
        part = describe(turn)
        if used + len(part) > budget:
            part = describe(turn, answer_chars=200)
        if used + len(part) > budget:
            break
        parts.append(part)
        used += len(part)
    omitted = len(missed) - len(parts)
    files = tuple(dict.fromkeys(f for t in missed for f in t.files))
    body = "\n\n".join(reversed(parts))
    if omitted:
        body = f"({omitted} earlier turn{'s' * (omitted != 1)} left out to fit.)\n\n" + body
    if files:
        body += "\n\nFiles touched: " + ", ".join(files)
    text = (
        f"<{TAG}>\nThis notebook session went on without you (other coding agents, or you "
        f"before a restart). What happened since you last took part:\n\n{body}\n\nContinue "
        f"from there; the files are in the working directory.\n</{TAG}>"
    )
    harnesses = tuple(dict.fromkeys(t.harness for t in missed))
    return Handoff(text, len(missed), harnesses, files)


def review_prompt(events: Iterable[Event], reviewer: str, extra: str = "") -> tuple[str, Turn]:
    """A prompt asking `reviewer` to review the latest turn of another harness."""
    turns = [t for t in turns_of(events) if t.harness != reviewer and t.prompt]
    if not turns:
        raise LookupError(
            f"there is no turn by another agent to review; run a prompt with another harness "
            f"first (e.g. %%agent codex), then %%agent {reviewer} --review"
        )
    turn = turns[-1]
    changes = "\n\n".join(turn.changes) or "(no file changes recorded)"
    prompt = (
        f"Review the last turn of the {turn.harness} agent in this working directory.\n\n"
        f"{describe(turn, answer_chars=4000)}\n\nIts changes:\n{changes}\n\n"
        "Point out bugs, risks and anything left undone, most important first, and say what "
        "you would change. Read the files if you need to, but do not modify them."
    )
    if extra.strip():
        prompt += f"\n\nAlso: {extra.strip()}"
    return prompt, turn
