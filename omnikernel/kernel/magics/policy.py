"""`%policy`, `%autoapprove`: read, change and dry-run the session's policy from the notebook.

%policy                      the active rules, their level and state
%policy add RULE [ARGS]      a session rule (e.g. %policy add pause-every 5)
%policy off RULE             remove a session rule (files' rules stay: a session cannot
                             weaken another level)
%policy load FILE            a TOML policy file's rules become session rules
%policy reload               read the user and project files again
%policy test FILE [SESSION]  replay a recorded session against FILE: what it would have
                             allowed, asked, denied or paused
%policy test host HOST[:PORT]  what a connection from the sandbox to HOST would get now
%autoapprove [on|off]        approve what no rule asks about (a rule's ask or deny still holds)
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.display import display

from omnikernel.approvals.decide import AUTO_APPROVE_ENV
from omnikernel.events import Event, EventKind
from omnikernel.kernel.magics.common import SessionMagicsBase, show, table
from omnikernel.policy import hosts
from omnikernel.policy.config import Policy, PolicyFileError, load_file
from omnikernel.policy.engine import judge, observe, pause_key, request_of
from omnikernel.policy.rule import Request, Rule, RuleError
from omnikernel.policy.rules import BUILTINS, DEFAULT_RULES

if TYPE_CHECKING:
    pass

USAGE = ("Usage: %policy | %policy add RULE [ARGS] | %policy off RULE | %policy load FILE | "
         "%policy reload | %policy test FILE [SESSION_ID] | %policy test host HOST[:PORT]. Rules: " + ", ".join(
             f"{n} {' '.join(p.upper() for p in c.params)}".strip() for n, c in BUILTINS.items()))  # fmt: skip


def replay(rules: list[Rule], events: list[Event], cwd: Path) -> list[list[Any]]:
    """What `rules` would have decided for each action and model call of `events`."""
    from omnikernel.policy.rule import PolicyState

    state, rows = PolicyState(), []
    judged: set[str] = set()
    for event in events:
        data = event.data
        if event.kind in (EventKind.TOOL_CALL, EventKind.APPROVAL_REQUEST) and (
            data.get("action") != "pause"
        ):
            call = str(data.get("call_id") or data.get("request_id") or event.seq)
            if call not in judged:
                judged.add(call)
                verdict = judge(rules, state, request_of(data, cwd))
                what = f"{data.get('tool', '?')}: {data.get('summary', '')}"
                rows.append([event.turn, what, str(verdict.outcome), ", ".join(verdict.rules)])
        state = observe(state, event, cwd)
        if event.kind == EventKind.SPEND:
            verdict = judge(rules, state, Request(kind="model_call"))
            if verdict.outcome > 0:
                rows.append(
                    [
                        event.turn,
                        f"model call (spent ${state.spent_usd:.4f}, {state.spent_tokens:,} tokens)",
                        str(verdict.outcome),
                        ", ".join(verdict.rules),
                    ]
                )
                marks = dict(state.pause_marks)
                for every, mark in verdict.pause_marks:
                    marks[pause_key(every)] = int(mark)  # a replay assumes each pause was approved
                state = dataclasses.replace(state, pause_marks=tuple(marks.items()))
    return rows


@magics_class
class PolicyMagics(SessionMagicsBase):
    @line_magic
    def policy(self, line: str) -> None:
        """%policy [add RULE ARGS | off RULE | load FILE | reload | test FILE [SESSION]]."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"cannot read {line!r}: {exc}. {USAGE}") from None
        verb, args = (words[0], words[1:]) if words else ("", [])
        policy: Policy = self.session.policy
        try:
            if verb == "":
                pass
            elif verb == "add" and args:
                rule = policy.add(args[0], args[1:])
                show(f"Added {rule.describe()} (session level).")
            elif verb == "off" and len(args) >= 1:
                removed = policy.off(" ".join(args))
                show("Turned off " + ", ".join(r.describe() for r in removed) + ".")
            elif verb == "load" and len(args) == 1:
                loaded = policy.load(self._path(args[0]))
                show(f"Loaded {len(loaded)} rule(s) from {args[0]} as session rules.")
            elif verb == "reload":
                policy.reload()
            elif verb == "test" and len(args) == 2 and args[0] == "host":
                self._test_host(args[1])
                return
            elif verb == "test" and len(args) in (1, 2):
                self._test(args)
                return
            else:
                raise UsageError(USAGE)
        except (RuleError, PolicyFileError) as exc:
            raise UsageError(str(exc)) from None
        self._list()

    def _path(self, word: str) -> Path:
        path = Path(word).expanduser()
        return path if path.is_absolute() else self.session.cwd / path

    def _list(self) -> None:
        session = self.session
        state = session.live_state()
        rules = session.rules()
        for error in session.policy.errors:
            show(
                f"✗ POLICY DOES NOT LOAD, every action is denied until it is fixed:\n{error}",
                f"✗ **Policy does not load**, every action is denied until it is fixed:\n\n"
                f"```\n{error}\n```",
            )
        rows = [
            [r.describe(), r.level, r.help or r.__doc__ or "", r.state_text(state)] for r in rules
        ]
        display(table(["rule", "level", "what it does", "state"], rows), raw=True)
        auto = "on" if session.auto_approve else "off"
        files = ", ".join(
            str(p) for p in (session.policy.user_path, session.policy.project_path) if p is not None
        )
        show(
            f"Other actions that change things ask (auto-approval {auto}: it answers only "
            f"that default ask). A connection from the sandbox to a host no rule allows asks "
            f"too, and auto-approval never answers it. Policy files: {files}."
        )

    def _test_host(self, target: str) -> None:
        """Dry run of one network request against the session's rules and approvals now."""
        session = self.session
        host, _, port_text = target.rpartition(":") if ":" in target else (target, "", "443")
        if not host or not port_text.isdigit():
            raise UsageError(f"{target!r} is not HOST or HOST:PORT")
        port = int(port_text)
        if hosts.allowed(session.allow_hosts, host, port):
            show(f"{host}:{port}: allowed (by %sandbox allow / sandbox_allow).")
            return
        data = {"action": "network", "tool": "test", "input": {"host": host, "port": port}}
        verdict = session.judge(request_of(data))
        said = {
            "allow": "allowed",
            "deny": "denied",
            "ask": "asks a person (auto-approval never answers a network ask)",
        }
        show(
            f"{host}:{port}: {said.get(str(verdict.outcome), str(verdict.outcome))}, "
            f"by {', '.join(verdict.rules)} ({verdict.reason})."
        )

    def _test(self, args: list[str]) -> None:
        session = self.session
        loaded = load_file(self._path(args[0]), "test", session.cwd)
        rules: list[Rule] = [
            cls("default") for cls in DEFAULT_RULES if cls.name not in loaded.disabled
        ]
        rules += list(loaded.rules)
        session_id = args[1] if len(args) == 2 else session.session_id
        events = session.store.events(session_id)
        if not events:
            raise UsageError(f"session {session_id!r} has no recorded events")
        rows = replay(rules, events, session.cwd)
        if not rows:
            show(f"Session {session_id} made no tool calls to judge.")
            return
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[2]] = counts.get(row[2], 0) + 1
        display(table(["turn", "action", "would be", "rules"], rows), raw=True)
        show(
            f"Dry run of {args[0]} over session {session_id}: "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            + "."
        )

    @line_magic
    def autoapprove(self, line: str) -> None:
        """%autoapprove [on|off]: approve every permission request of this session."""
        word = line.strip().lower()
        if word in ("on", "1", "true", "yes"):
            self.session.auto_approve = True
        elif word in ("off", "0", "false", "no"):
            self.session.auto_approve = False
        elif word:
            raise UsageError(f"%autoapprove takes on or off, not {word!r}")
        state = "on" if self.session.auto_approve else "off"
        note = (
            " Actions that change things and that no rule asks about are approved; each "
            "approval says so in its cell. A rule's ask or deny still applies (see %policy), "
            "and so does the ask for a new network host."
            if self.session.auto_approve
            else f" Actions that change things ask for approval in the cell (start the kernel "
            f"with {AUTO_APPROVE_ENV}=1 or run %autoapprove on to approve those no rule asks "
            f"about)."
        )
        show(f"Auto-approval is {state}.{note}")
