"""What a policy rule is: what it looks at, what it answers, and the base every rule shares.

A rule looks at one `Request` (an agent's action, a model call, or a connection from the
sandbox) and the session's `PolicyState` (what the rules remember, folded from the stored
events) and returns a `Match`: an `Outcome` and why. Outcomes are ordered so the engine can take
the strictest. The built-in rules live in `omnikernel.policy.rules` (commands, amounts, counts)
and `omnikernel.policy.reach_rules` (what reaches past the sandbox).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, ClassVar

from omnikernel.policy.commands import Command


class Outcome(enum.IntEnum):
    """Ordered: the strictest match wins."""

    ALLOW = 0
    ASK = 1
    PAUSE = 2
    DENY = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclasses.dataclass(frozen=True)
class Request:
    """What the engine judges: an agent's action, or (kind "model_call") a model call."""

    kind: str = "action"  # "action" | "model_call" | "network"
    action: str = "other"
    tool: str = ""
    summary: str = ""
    call_id: str = ""
    commands: tuple[Command, ...] = ()
    #: Files a write or edit touches (absolute).
    paths: tuple[str, ...] = ()
    #: Identifies "the same call" for loop-guard.
    key: str = ""
    #: For a push (action "push"): the remote ("github.com/owner/repo"), its default branch
    #: when known, and the ref updates: (ref, kind) with kind "create", "delete",
    #: "fast-forward", "force" or "maybe-force".
    remote: str = ""
    default_branch: str = ""
    refs: tuple[tuple[str, str], ...] = ()
    #: For a network request: where the sandbox wants to connect.
    host: str = ""
    port: int = 0


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """What the rules remember, folded from the session's stored events (see `engine.observe`)."""

    #: The package install that ran in this session ("" if none yet).
    installed: str = ""
    spent_usd: float = 0.0
    #: Tokens metered, as a token budget counts them (`omnikernel.policy.amounts.counted_tokens`).
    spent_tokens: int = 0
    budget_usd: float | None = None
    budget_tokens: int | None = None
    #: How many multiples of each pause-every amount were already approved to continue, by
    #: `Amount.key` (the USD figure, or "<n> tokens").
    pause_marks: tuple[tuple[float | str, int], ...] = ()
    #: This turn's tool calls so far: (call_id, key).
    turn_calls: tuple[tuple[str, str], ...] = ()
    #: (rule, subject) pairs a person approved for the rest of the session.
    approvals: frozenset[tuple[str, str]] = frozenset()
    #: Calls that may install packages, by call id, until their result arrives.
    pending_installs: tuple[tuple[str, str], ...] = ()
    denied_calls: frozenset[str] = frozenset()
    #: Branches this session created on a remote through the broker: (remote, ref).
    own_branches: frozenset[tuple[str, str]] = frozenset()
    #: Pushes asked and not yet decided, by call id: (remote, refs they create).
    pending_pushes: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    #: The ``push-branch`` patterns of the active rules (the engine sets them for a push).
    push_patterns: tuple[str, ...] = ()

    def pause_mark(self, every: float | str) -> int:
        return dict(self.pause_marks).get(every, 0)


@dataclasses.dataclass(frozen=True)
class Match:
    rule: str
    outcome: Outcome
    reason: str
    #: What the match is about ("git push", a file path): the key of a session approval.
    subject: str = ""
    level: str = "default"
    #: For pauses: the multiple of the pause amount (its `Amount.key`) this pause is for.
    pause_mark: tuple[float | str, int] | None = None


class RuleError(ValueError):
    """A rule's arguments are wrong; the message says what is expected."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """A built-in rule with its arguments and the level it comes from."""

    name: ClassVar[str]
    #: The argument names, in order (``%policy add NAME ARGS``, TOML keys).
    params: ClassVar[tuple[str, ...]] = ()
    help: ClassVar[str] = ""
    level: str = "default"

    def check(self, request: Request, state: PolicyState) -> Match | None:
        raise NotImplementedError

    def args(self) -> tuple[Any, ...]:
        return tuple(getattr(self, p) for p in self.params)

    def describe(self) -> str:
        return " ".join(
            [self.name, *(f"{a:g}" if isinstance(a, float) else str(a) for a in self.args())]
        )

    def state_text(self, state: PolicyState) -> str:
        return ""

    def _match(self, outcome: Outcome, reason: str, subject: str = "", **kw: Any) -> Match:
        return Match(self.describe(), outcome, reason, subject, self.level, **kw)
