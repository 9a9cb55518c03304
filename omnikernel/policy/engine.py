"""The policy engine: pure functions from events and state to decisions and new state.

- `observe(state, event)` folds one stored event into the `PolicyState` (a package install
  ran, a tool call was made, a person approved something for the session, a pause was
  approved). The session folds its stored events at start, so state survives a restart.
- `judge(rules, state, request)` runs every rule and returns a `Verdict`: the strictest outcome
  (allow < ask < pause < deny) with every match that led to it. With no match, read-only
  actions and model calls are allowed and anything else gets the *default* ask, the only ask
  auto-approval may answer. A rule that raises makes the verdict deny (fail closed).
  A network request (the sandbox connecting to a host) that no rule allows or denies gets the
  `NETWORK_ASK`: a rule's ask, never auto-approved, remembered per host.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omnikernel.events import READ_ONLY_ACTIONS, Event, EventKind
from omnikernel.policy.amounts import counted_tokens
from omnikernel.policy.commands import Command, parse
from omnikernel.policy.reach_rules import PushBranch
from omnikernel.policy.rule import Match, Outcome, PolicyState, Request, Rule
from omnikernel.policy.rules import installs

log = logging.getLogger(__name__)

#: The `rule` of the ask every non-read-only action gets when no rule matched.
DEFAULT_ASK = "default"
#: The `rule` of the ask a connection to a host no rule names gets (its subject: the host).
NETWORK_ASK = "network"


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    matches: tuple[Match, ...]

    @property
    def is_default_ask(self) -> bool:
        """Only the default ask matched: auto-approval may answer it."""
        return self.outcome == Outcome.ASK and all(m.rule == DEFAULT_ASK for m in self.matches)

    @property
    def deciding(self) -> tuple[Match, ...]:
        """The matches that decided: those with the winning outcome; for a person's decision
        (ask, pause) every ask and pause, since one answer covers them all."""
        if self.outcome in (Outcome.ASK, Outcome.PAUSE):
            return tuple(m for m in self.matches if m.outcome in (Outcome.ASK, Outcome.PAUSE))
        return tuple(m for m in self.matches if m.outcome == self.outcome)

    @property
    def pause_marks(self) -> list[list[float | str]]:
        """The pauses an approval of this verdict continues past: [[every, mark], ...]."""
        return [list(m.pause_mark) for m in self.deciding if m.pause_mark]

    @property
    def reason(self) -> str:
        return "; ".join(f"{m.rule}: {m.reason}" for m in self.deciding)

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(m.rule for m in self.deciding)

    @property
    def subject(self) -> str:
        return next((m.subject for m in self.deciding if m.subject), "")


def request_of(data: dict[str, Any], cwd: Path | str = "/") -> Request:
    """The `Request` for an ``approval_request`` (or ``tool_call``) event's data."""
    action = str(data.get("action") or "other")
    tool_input = data.get("input") or {}
    if action == "network" and isinstance(tool_input, dict):
        port = tool_input.get("port")
        return Request(
            kind="network",
            action=action,
            tool=str(data.get("tool") or ""),
            summary=str(data.get("summary") or ""),
            call_id=str(data.get("call_id") or ""),
            host=str(tool_input.get("host") or "").lower().rstrip("."),
            port=port if isinstance(port, int) else 443,
        )
    summary = str(data.get("summary") or "")
    commands: tuple[Command, ...] = ()
    if action == "exec":
        line = tool_input.get("command") if isinstance(tool_input, dict) else None
        if isinstance(line, list):  # some harnesses give argv
            line = " ".join(str(w) for w in line)
        commands = parse(str(line if line is not None else summary)).commands
    paths: tuple[str, ...] = ()
    if action in ("write", "edit"):
        found = [
            tool_input.get(k)
            for k in ("file_path", "path", "filePath", "file")
            if isinstance(tool_input, dict)
        ]
        changes = tool_input.get("changes") if isinstance(tool_input, dict) else None
        if isinstance(changes, list):
            found += [c.get("path") for c in changes if isinstance(c, dict)]
        elif isinstance(changes, dict):
            found += list(changes)
        paths = tuple(posixpath.normpath(posixpath.join(str(cwd), str(p))) for p in found if p)
    remote, default_branch = "", ""
    refs: tuple[tuple[str, str], ...] = ()
    if action == "push" and isinstance(tool_input, dict):
        remote = str(tool_input.get("remote") or "")
        default_branch = str(tool_input.get("default_branch") or "")
        refs = tuple(
            (str(u.get("ref", "")), str(u.get("kind", "")))
            for u in tool_input.get("updates") or ()
            if isinstance(u, dict)
        )
    return Request(
        kind="action",
        action=action,
        tool=str(data.get("tool") or ""),
        summary=summary,
        call_id=str(data.get("call_id") or ""),
        commands=commands,
        paths=paths,
        key=f"{action}:{summary}" if summary else "",
        remote=remote,
        default_branch=default_branch,
        refs=refs,
    )


def judge(rules: Iterable[Rule], state: PolicyState, request: Request) -> Verdict:
    """See the module docstring."""
    matches: list[Match] = []
    rules = list(rules)
    if request.action == "push":
        patterns = tuple(r.pattern for r in rules if isinstance(r, PushBranch))
        state = dataclasses.replace(state, push_patterns=patterns)
    try:
        for rule in rules:
            match = rule.check(request, state)
            if match is None:
                continue
            if match.outcome == Outcome.ASK and (match.rule, match.subject) in state.approvals:
                match = dataclasses.replace(
                    match,
                    outcome=Outcome.ALLOW,
                    reason=f"approved for this session ({match.reason})",
                )
            matches.append(match)
    except Exception as exc:  # fail closed: a broken rule denies
        log.exception("policy rule failed")
        return Verdict(
            Outcome.DENY,
            (
                Match(
                    "policy-error",
                    Outcome.DENY,
                    f"a policy rule failed ({exc!r}), so the action is denied",
                ),
            ),
        )
    if any(m.outcome > Outcome.ALLOW for m in matches):
        return Verdict(max(m.outcome for m in matches), tuple(matches))
    if request.kind == "network":
        return network_verdict(request, state, matches)
    if request.kind == "model_call" or request.action in READ_ONLY_ACTIONS:
        return Verdict(
            Outcome.ALLOW,
            (
                *matches,
                Match("read-only", Outcome.ALLOW, f"{request.action} is read-only"),
            ),
        )
    if matches:  # a remembered approval answered every ask
        return Verdict(Outcome.ALLOW, tuple(matches))
    subject = subject_of(request)
    if (DEFAULT_ASK, subject) in state.approvals:
        return Verdict(
            Outcome.ALLOW,
            (Match(DEFAULT_ASK, Outcome.ALLOW, f"approved for this session ({subject})", subject),),
        )
    what = f"{request.tool} `{request.summary}`" if request.summary else request.tool
    return Verdict(
        Outcome.ASK,
        (
            Match(
                DEFAULT_ASK,
                Outcome.ASK,
                f"{what} needs approval (a {request.action} action)",
                subject,
            ),
        ),
    )


def network_verdict(request: Request, state: PolicyState, matches: list[Match]) -> Verdict:
    """A connection no rule denied: allowed by an ``allow-host`` rule or a remembered approval
    of its host, else the network ask."""
    if matches:
        return Verdict(Outcome.ALLOW, tuple(matches))
    where = f"{request.host}:{request.port}"
    if (NETWORK_ASK, request.host) in state.approvals:
        return Verdict(
            Outcome.ALLOW,
            (Match(NETWORK_ASK, Outcome.ALLOW, f"{request.host} approved before", request.host),),
        )
    who = request.tool or "a command"
    return Verdict(
        Outcome.ASK,
        (
            Match(
                NETWORK_ASK,
                Outcome.ASK,
                f"{who} wants to reach {where}, which no rule allows",
                request.host,
            ),
        ),
    )


def subject_of(request: Request) -> str:
    """What a "for this session" approval of the default ask covers: a command's first two
    words, a file, or the tool."""
    certain = [c for c in request.commands if not c.opaque and len(c.argv) > 0]
    if request.action == "exec" and certain:
        return " ".join(certain[-1].argv[:2])
    if request.paths:
        return request.paths[0]
    return request.tool or request.action


def observe(state: PolicyState, event: Event, cwd: Path | str = "/") -> PolicyState:
    """`state` after `event` (see the module docstring)."""
    data, kind = event.data, event.kind
    if kind == EventKind.TURN_START:
        return dataclasses.replace(state, turn_calls=())
    if kind in (EventKind.TOOL_CALL, EventKind.APPROVAL_REQUEST):
        request = request_of(data, cwd)
        if request.kind == "network":  # a connection, not a tool call of the turn
            return state
        calls = state.turn_calls
        if kind == EventKind.TOOL_CALL or all(c != request.call_id for c, _ in calls):
            calls = (*calls, (request.call_id, request.key))
        pending = state.pending_installs
        if (found := installs(request.commands)) and request.call_id:
            pending = (*pending, (request.call_id, found))
        pushes = state.pending_pushes
        if request.action == "push" and request.call_id:
            created = tuple(r for r, k in request.refs if k == "create")
            pushes = (*pushes, (request.call_id, request.remote, created))
        return dataclasses.replace(
            state, turn_calls=calls, pending_installs=pending, pending_pushes=pushes
        )
    if kind == EventKind.APPROVAL_DECISION:
        call = str(data.get("call_id") or "")
        push = next((p for p in state.pending_pushes if p[0] == call), None) if call else None
        if push is not None:
            own = state.own_branches
            if data.get("decision") == "allow":
                own |= {(push[1], ref) for ref in push[2]}
            rest = tuple(p for p in state.pending_pushes if p[0] != call)
            state = dataclasses.replace(state, own_branches=own, pending_pushes=rest)
        if data.get("decision") != "allow":
            call = str(data.get("call_id") or "")
            return (
                dataclasses.replace(state, denied_calls=state.denied_calls | {call})
                if call
                else state
            )
        approvals = state.approvals
        if data.get("scope") in ("session", "always"):
            approvals |= {(str(r), str(data.get("subject", ""))) for r in data.get("rules", ())}
        marks = dict(state.pause_marks)
        for every, mark in data.get("pause_marks") or ():
            key = pause_key(every)
            marks[key] = max(marks.get(key, 0), int(mark))
        return dataclasses.replace(state, approvals=approvals, pause_marks=tuple(marks.items()))
    if kind == EventKind.TOOL_RESULT:
        call = str(data.get("call_id") or "")
        ran = dict(state.pending_installs).get(call)
        if ran and call not in state.denied_calls:
            return dataclasses.replace(state, installed=ran)
        return state
    if kind == EventKind.SPEND:
        return dataclasses.replace(
            state,
            spent_usd=state.spent_usd + (data.get("cost_usd") or 0),
            spent_tokens=state.spent_tokens + counted_tokens(data),
        )
    return state


def pause_key(every: Any) -> float | str:
    """A stored pause mark's key: the USD figure, or "<n> tokens" (see `Amount.key`)."""
    return every if isinstance(every, str) else float(every)


def fold(
    events: Iterable[Event], state: PolicyState | None = None, cwd: Path | str = "/"
) -> PolicyState:
    """The state after every event of `events`, in order."""
    state = state or PolicyState()
    for event in events:
        state = observe(state, event, cwd)
    return state
