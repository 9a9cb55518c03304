"""The one event type: everything that happens in a session, in the order it happened.

Harness adapters translate their CLI's protocol into `Event`s and do nothing else. The session
stamps each event with its place (session id, a session-wide sequence number, harness, turn,
cell, time) and appends it to the store *before* anyone shows it; rendering, `%history`, the
server extension, the approval cards and the share page consume only this type.

Payload keys per kind (all JSON-serialisable; vendor names appear only as `tool`, for display):

- ``turn_start``      prompt, model, kernel (host:pid); carries_out (the request id of an
                      approval given after a restart that this turn carries out), told_denials
                      (request ids of such denials this turn's prompt told the agent of)
- ``text``            text (a delta of the assistant's answer)
- ``tool_call``       call_id, tool, action, summary, input
- ``tool_result``     call_id, output, is_error
- ``approval_request``  request_id, call_id, tool, action, summary, input (action "pause":
                      a policy pause at a model call, summary says why)
- ``approval_decision`` request_id, decision ("allow" | "deny"), reason, by (a rule, "user",
                      "timeout", ...), rules (that asked or decided), source ("policy",
                      "widget", "timeout", ...), scope ("once" | "session" | "always"),
                      subject (what a session approval covers), call_id, pause_marks
                      ([[every, multiple], ...]; every is USD, or "<n> tokens"),
                      after_restart (answered after its kernel died, see
                      `omnikernel.approvals.after_restart`)
- ``usage``           model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                      cost_usd (as the harness reports it, or None), num_turns
- ``spend``           what the gateway metered for one model call: harness, vendor, model,
                      input/output/cache tokens, cost_usd (None: unpriced), estimated
- ``notice``          message (offline mode, sandbox off, a handoff, ...), details (optional)
- ``error``           message, hint
- ``turn_end``        status ("completed" | "interrupted" | "error"), duration_s,
                      harness_session (the CLI's own conversation id), sandbox (backend or "off"),
                      session_spend (the session against its budget or next pause, if set);
                      a stopped turn: stopped (what the stop ended: "the command `...`", "the
                      model call", "the approval request for ..."), stop_s (how long it took)

`action` is the vendor-neutral name of what a tool does, so policies never match vendor tool
names: one of `ACTIONS`.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any


class EventKind(enum.StrEnum):
    TURN_START = "turn_start"
    TEXT = "text"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    APPROVAL_REQUEST = "approval_request"
    APPROVAL_DECISION = "approval_decision"
    USAGE = "usage"
    SPEND = "spend"
    NOTICE = "notice"
    ERROR = "error"
    TURN_END = "turn_end"


#: What a tool does, independent of the harness that offers it.
ACTIONS = frozenset(
    {
        "exec",  # runs a command
        "read",  # reads a file
        "search",  # lists or greps files
        "write",  # creates or overwrites a file
        "edit",  # changes part of a file
        "fetch",  # reaches the network (web fetch / search)
        "plan",  # bookkeeping with no effect outside the agent (todo lists, plan mode)
        "delegate",  # starts a sub-agent
        "network",  # a connection from the sandbox to a host (asked by the egress proxy)
        "python",  # runs Python in the user's kernel, outside the sandbox (notebook.kernel_run)
        "other",
    }
)

#: Actions that cannot change anything outside the agent.
READ_ONLY_ACTIONS = frozenset({"read", "search", "plan"})


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. Adapters fill `kind` and `data`; the session fills the rest."""

    kind: EventKind
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    seq: int = -1
    session_id: str = ""
    harness: str = ""
    turn: int = 0
    cell: str = ""
    ts: float = dataclasses.field(default_factory=time.time)

    def stamped(self, **place: Any) -> Event:
        """A copy with its place in the session filled in (seq, session_id, harness, ...)."""
        return dataclasses.replace(self, **place)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "session_id": self.session_id,
            "kind": self.kind.value,
            "harness": self.harness,
            "turn": self.turn,
            "cell": self.cell,
            "ts": self.ts,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            kind=EventKind(d["kind"]),
            data=d.get("data") or {},
            seq=d.get("seq", -1),
            session_id=d.get("session_id", ""),
            harness=d.get("harness", ""),
            turn=d.get("turn", 0),
            cell=d.get("cell", ""),
            ts=d.get("ts", 0.0),
        )


# Small constructors, so adapters read as a list of what happened.


def text(delta: str) -> Event:
    return Event(EventKind.TEXT, {"text": delta})


def tool_call(call_id: str, tool: str, action: str, summary: str, input: dict[str, Any]) -> Event:
    return Event(
        EventKind.TOOL_CALL,
        {"call_id": call_id, "tool": tool, "action": action, "summary": summary, "input": input},
    )


def tool_result(call_id: str, output: str, is_error: bool = False) -> Event:
    return Event(
        EventKind.TOOL_RESULT, {"call_id": call_id, "output": output, "is_error": is_error}
    )


def notice(message: str) -> Event:
    return Event(EventKind.NOTICE, {"message": message})


def error(message: str, hint: str = "") -> Event:
    return Event(EventKind.ERROR, {"message": message, "hint": hint})
