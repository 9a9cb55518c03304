"""The built-in rules: what each checks, with what arguments, and what it says when it matches.

Pure. A rule looks at one `Request` (an agent action, or a model call) and the session's
`PolicyState` and returns a `Match` (its outcome and why) or None. Rules never decide alone: the
engine collects every match and the strictest outcome wins (`Outcome` is ordered). What a rule
sees and answers is `omnikernel.policy.rule`; the rules over what reaches past the sandbox
(pushes, hosts, tools, the kernel, the notebook) are `omnikernel.policy.reach_rules`. This module
has the rules over commands, amounts and counts, the table of every built-in and `make_rule`.

Built-ins (``%policy add NAME ARGS`` or ``[[rule]] rule = NAME`` in a policy file):

- ``push-after-install``  once a package install ran in the session, publishing asks
  (``git push``, ``npm publish``, ``twine upload``, ``docker push``, ...). On by default.
- ``pause-every AMOUNT``  each time metered spend crosses another multiple of AMOUNT, pause.
  AMOUNT is USD (``5``, ``$5``; on a plan the API-equivalent price) or tokens (``1M tokens``,
  ``500k tok``; see `omnikernel.policy.amounts` for which tokens count).
- ``budget AMOUNT``       the hard cap: past it, actions are denied (the gateway refuses calls).
- ``ask PATTERN`` / ``deny PATTERN``   commands matching PATTERN ask / are denied.
- ``ask-write-outside PATH``   writing or editing a file outside PATH asks.
- ``max-tool-calls N``    the N+1th tool call of a turn asks.
- ``loop-guard N``        the same call made N times in a row asks.
- ``push-own-branches``   a push the egress proxy reads (a brokered git host, action ``push``)
  may update branches this session created or that a ``push-branch`` rule names; any other ref
  asks, and a force update or deletion of the remote's default branch is denied (an update of
  it the pack cannot show to be a fast-forward asks, saying so). On by default.
- ``push-branch PATTERN`` branches matching PATTERN (``agent/*``) count as the session's own.
- ``allow-host PATTERN`` / ``deny-host PATTERN``   a connection from the sandbox to a host
  matching PATTERN (``pypi.org``, ``*.github.com``, ``host:port``, a preset such as ``@pypi``;
  see `omnikernel.policy.hosts`) is allowed / denied. A host no rule names asks (the
  ``network`` ask, which auto-approval never answers).
- ``ask-python``          Python run in the user's kernel (the ``python`` action, the notebook
  server's ``kernel_run``) asks; `%autoapprove` never answers it. On by default.
- ``allow-tool NAME`` / ``ask-tool NAME`` / ``deny-tool NAME``   a tool named NAME (a glob over
  ``server.tool`` for MCP tools, e.g. ``notebook.kernel_run``, ``github.*``; else the harness's
  tool name) is allowed / asks / is denied. An allow answers only the default ask: a rule's ask
  (``ask-python``) still asks.
- ``read-only-file PATH``  writing or editing PATH is denied (the session adds one for the open
  notebook: agents propose cells with ``notebook_insert_cell`` instead).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import posixpath
import shlex
from collections.abc import Callable
from typing import Any, ClassVar

from omnikernel.policy.amounts import TOKENS, USD, Amount, AmountError, parse_amount
from omnikernel.policy.commands import UNKNOWN, Command
from omnikernel.policy.reach_rules import (
    AllowHost,
    AllowTool,
    AskPython,
    AskTool,
    DenyHost,
    DenyTool,
    PushBranch,
    PushOwnBranches,
    ReadOnlyFile,
)
from omnikernel.policy.rule import Match, Outcome, PolicyState, Request, Rule, RuleError

# -- command patterns ----------------------------------------------------------------------------

#: Subcommand spellings the package managers accept for the same thing (npm takes typos too).
SUBCOMMAND_ALIASES = {
    "npm": {
        **dict.fromkeys(["i", "in", "ins", "inst", "insta", "instal", "isnt", "isnta",
                         "isntal", "isntall", "add", "install"], "install"),
        **dict.fromkeys(["it", "install-test", "cit", "clean-install-test", "sit"], "install-test"),
        **dict.fromkeys(["ci", "clean-install", "ic", "install-clean", "isntall-clean"], "ci"),
        **dict.fromkeys(["x", "exec"], "exec"),
        **dict.fromkeys(["pub", "publish"], "publish"),
    },
    "pnpm": dict.fromkeys(["i", "install", "add"], "install"),
    "yarn": dict.fromkeys(["add", "install"], "install"),
    "bun": dict.fromkeys(["i", "install", "add"], "install"),
}  # fmt: skip
COMMAND_ALIASES = {"pip3": "pip", "npx": "npm-exec", "pnpx": "npm-exec", "bunx": "npm-exec"}


def canonical(argv: tuple[str, ...]) -> tuple[str, ...]:
    """argv with the command's name and subcommand in their one canonical spelling."""
    if not argv:
        return argv
    name = posixpath.basename(argv[0])
    if name.startswith("pip") and name[3:].replace(".", "").isdigit():
        name = "pip"
    name = COMMAND_ALIASES.get(name, name)
    if name == "npm-exec":
        return ("npm", "exec", *argv[1:])
    rest = argv[1:]
    aliases = SUBCOMMAND_ALIASES.get(name)
    if aliases:
        i = next((k for k, w in enumerate(rest) if not w.startswith("-")), None)
        if i is not None and rest[i] in aliases:
            rest = (*rest[:i], aliases[rest[i]], *rest[i + 1 :])
        elif name == "yarn" and i is None:
            rest = ("install", *rest)  # a bare `yarn` installs
    return (name, *rest)


@dataclasses.dataclass(frozen=True)
class CommandPattern:
    """Shell words; a command matches when its name matches the first and the others appear in
    order among its arguments (``*`` globs inside a word; ``git push`` matches
    ``git -C x push --force``). Words bash computes match anything: "maybe"."""

    text: str
    words: tuple[str, ...]

    @classmethod
    def of(cls, text: str) -> CommandPattern:
        try:
            words = tuple(shlex.split(text))
        except ValueError as exc:
            raise RuleError(f"cannot read the command pattern {text!r}: {exc}") from None
        if not words:
            raise RuleError("a command pattern needs at least a command name, e.g. 'git push'")
        return cls(text, canonical(words))

    def match(self, command: Command) -> str | None:
        """ "yes", "maybe" (it may, by the most dangerous reading) or None."""
        if command.opaque:
            return "maybe"
        argv = canonical(command.argv)
        if not argv:
            return None
        first = argv[0]
        if first == UNKNOWN:
            return "maybe"
        if not fnmatch.fnmatchcase(first, self.words[0]):
            return None
        return _subsequence(self.words[1:], argv[1:])


def _subsequence(pattern: tuple[str, ...], words: tuple[str, ...]) -> str | None:
    found, maybe = 0, False
    for word in words:
        if found == len(pattern):
            break
        if fnmatch.fnmatchcase(word, pattern[found]):
            found += 1
        elif word == UNKNOWN:
            found, maybe = found + 1, True
    if found < len(pattern):
        return None
    return "maybe" if maybe else "yes"


def first_match(
    patterns: tuple[CommandPattern, ...], commands: tuple[Command, ...]
) -> tuple[Command, CommandPattern, str] | None:
    """The first (command, pattern, "yes"|"maybe"), preferring a certain match."""
    maybe = None
    for command in commands:
        for pattern in patterns:
            how = pattern.match(command)
            if how == "yes":
                return command, pattern, how
            if how == "maybe" and maybe is None:
                maybe = (command, pattern, how)
    return maybe


PACKAGE_INSTALLS = tuple(CommandPattern.of(p) for p in (
    "npm install", "npm install-test", "npm ci", "npm exec", "npm update", "pnpm install",
    "pnpm dlx", "pnpm update", "yarn install", "yarn dlx", "bun install", "pip install",
    "pip download", "uv pip install", "uv add", "uv sync", "uv tool install", "uvx",
    "pipx install", "pipx run", "poetry add", "poetry install", "conda install", "mamba install",
    "micromamba install", "gem install", "bundle install", "cargo install", "cargo add",
    "go install", "go get", "apt-get install", "apt install", "brew install", "composer install",
    "composer require", "easy_install",
))  # fmt: skip
PUBLISHING = tuple(CommandPattern.of(p) for p in (
    "git push", "git send-email", "npm publish", "pnpm publish", "yarn publish", "yarn npm",
    "bun publish", "twine upload", "docker push", "podman push", "buildah push", "cargo publish",
    "gem push", "poetry publish", "uv publish", "flit publish", "hatch publish", "gh release",
    "gh pr create", "vsce publish", "helm push",
))  # fmt: skip


def installs(commands: tuple[Command, ...]) -> str:
    """The package install among `commands` ("" if none is certain)."""
    for command in commands:
        if not command.opaque and any(p.match(command) == "yes" for p in PACKAGE_INSTALLS):
            return command.shown()
    return ""


def _positive(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RuleError(f"{what} must be a number, not {value!r}") from None
    if not number > 0 or math.isinf(number):
        raise RuleError(f"{what} must be positive, not {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class PushAfterInstall(Rule):
    name: ClassVar[str] = "push-after-install"
    help: ClassVar[str] = "after a package install, git push and other publishing commands ask"

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or not state.installed:
            return None
        if request.action == "push":  # read by the egress proxy, whatever command made it
            return self._match(
                Outcome.ASK,
                f"a git push to {request.remote} ({', '.join(r for r, _ in request.refs)}), and "
                f"a package install ran earlier in this session (`{state.installed}`)",
                "git push",
            )
        if not request.commands:
            return None
        found = first_match(PUBLISHING, request.commands)
        if found is None:
            return None
        command, pattern, how = found
        what = (
            f"`{command.shown()}` publishes"
            if how == "yes"
            else f"`{command.shown()}` may publish ({command.opaque or 'a computed word'})"
        )
        return self._match(
            Outcome.ASK,
            f"{what}, and a package install ran earlier in this session (`{state.installed}`)",
            pattern.text if how == "yes" else command.shown(),
        )

    def state_text(self, state: PolicyState) -> str:
        return f"armed: `{state.installed}` ran" if state.installed else "no install yet"


@dataclasses.dataclass(frozen=True)
class AmountRule(Rule):
    """A rule over the session's metered spend, in USD or in tokens (an `Amount`)."""

    params: ClassVar[tuple[str, ...]] = ("amount",)
    #: In a policy file: ``usd = 5`` or ``tokens = "1M"`` (or 1000000), or ``amount = "1M
    #: tokens"``.
    keys: ClassVar[tuple[str, ...]] = ("usd", "tokens", "amount")
    amount: Amount = Amount(1.0)

    def __post_init__(self) -> None:
        amount: object = self.amount  # a policy file's raw value until it is parsed here
        if not isinstance(amount, Amount):
            try:
                amount = parse_amount(amount, f"{self.name}'s amount")
            except AmountError as exc:
                raise RuleError(str(exc)) from None
        object.__setattr__(self, "amount", amount)

    @classmethod
    def amount_of(cls, args: list[Any] | dict[str, Any]) -> Amount:
        """The amount from ``%policy add`` words or a policy file's keys (RuleError if bad)."""
        what = f"{cls.name}'s amount"
        try:
            if isinstance(args, dict):
                given = [k for k in cls.keys if k in args]
                extra = set(args) - set(cls.keys)
                if extra or len(given) != 1:
                    raise RuleError(
                        f'{cls.name} takes one of usd = N, tokens = N (or "1M") or amount = '
                        f'"1M tokens"' + (f", not {', '.join(sorted(extra))}" if extra else "")
                    )
                key = given[0]
                unit = TOKENS if key == "tokens" else USD
                value = args[key]
                if key != "amount" and isinstance(value, str):
                    value = f"{value} {unit}" if key == "tokens" else value
                amount = parse_amount(value, what, default_unit=unit)
                if key == "usd" and amount.is_tokens:
                    raise RuleError(f"{what}: usd = {value!r} is tokens; write tokens = ...")
                return amount
            if not args:
                raise RuleError(
                    f"{cls.name} takes AMOUNT (usage: {cls.name} 5 | {cls.name} 1M tokens)"
                )
            return parse_amount(" ".join(str(a) for a in args), what)
        except AmountError as exc:
            raise RuleError(str(exc)) from None

    def describe(self) -> str:
        return f"{self.name} {self.amount.words()}"

    def spent(self, state: PolicyState) -> float:
        return self.amount.of(state.spent_usd, state.spent_tokens)


@dataclasses.dataclass(frozen=True)
class PauseEvery(AmountRule):
    name: ClassVar[str] = "pause-every"
    help: ClassVar[str] = (
        "pause each time spend crosses another multiple of AMOUNT (USD, or tokens: 1M tokens)"
    )

    def due(self, state: PolicyState) -> int:
        """The multiple crossed and not yet approved (0: none)."""
        crossed = int(self.spent(state) // self.amount.value)
        return crossed if crossed > state.pause_mark(self.amount.key) else 0

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind == "network" or not (mark := self.due(state)):
            return None  # a pause is asked at the next model call, not at a connection
        every = self.amount
        if every.is_tokens:
            reason = (
                f"the session has metered {state.spent_tokens:,} tokens, past "
                f"{every.show(mark * every.value)} (a pause every {every.show()}): "
                f"continue?"
            )
            subject = every.show(mark * every.value)
        else:
            reason = (
                f"the session's spend reached ${state.spent_usd:.4f}, past "
                f"${mark * every.value:g} (a pause every ${every.value:g}): continue?"
            )
            subject = f"${mark * every.value:g}"
        return self._match(Outcome.PAUSE, reason, subject, pause_mark=(every.key, mark))

    def next_pause(self, state: PolicyState) -> float:
        """Where the next pause comes, in this rule's unit."""
        crossed = max(
            int(self.spent(state) // self.amount.value), state.pause_mark(self.amount.key)
        )
        return (crossed + 1) * self.amount.value

    def state_text(self, state: PolicyState) -> str:
        every = self.amount
        if every.is_tokens:
            return (
                f"{state.spent_tokens:,} tokens metered; next pause at "
                f"{every.show(self.next_pause(state))}"
            )
        return f"${state.spent_usd:.2f} spent; next pause at ${self.next_pause(state):g}"


@dataclasses.dataclass(frozen=True)
class BudgetRule(AmountRule):
    name: ClassVar[str] = "budget"
    help: ClassVar[str] = (
        "the hard cap (USD, or tokens: 2M tokens): past it, actions are "
        "denied and model calls refused"
    )

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if self.spent(state) < self.amount.value:
            return None
        if self.amount.is_tokens:
            return self._match(
                Outcome.DENY,
                f"the {self.amount.show()} budget is used ({state.spent_tokens:,} tokens "
                f"metered); {self._how_to_raise('%budget N tokens')}",
            )
        return self._match(
            Outcome.DENY,
            f"the ${self.amount.value:.2f} budget is spent (${state.spent_usd:.4f}); "
            f"{self._how_to_raise('%budget N')}",
        )

    def _how_to_raise(self, magic: str) -> str:
        if self.level == "session":  # `%budget`'s cap, or a `%policy add budget` rule
            return f"raise it with `{magic}` (or `%policy off budget` if `%policy add` set it)"
        return f"it is a {self.level} policy rule: change it in that policy file (`%policy` says which)"

    def state_text(self, state: PolicyState) -> str:
        if self.amount.is_tokens:
            return f"{state.spent_tokens:,} of {self.amount.show()} metered"
        return f"${state.spent_usd:.4f} of ${self.amount.value:.2f} spent"


@dataclasses.dataclass(frozen=True)
class CommandRule(Rule):
    params: ClassVar[tuple[str, ...]] = ("pattern",)
    outcome: ClassVar[Outcome] = Outcome.ASK
    pattern: str = ""

    def __post_init__(self) -> None:
        CommandPattern.of(self.pattern)  # raises RuleError early

    def describe(self) -> str:
        return f"{self.name} {self.pattern!r}"

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or not request.commands:
            return None
        found = first_match((CommandPattern.of(self.pattern),), request.commands)
        if found is None:
            return None
        command, pattern, how = found
        if how == "yes":
            return self._match(
                self.outcome, f"`{command.shown()}` matches {pattern.text!r}", pattern.text
            )
        # What cannot be resolved asks, even under a deny rule: a person reads it.
        why = command.opaque or "a word in it is computed when it runs"
        return self._match(
            Outcome.ASK, f"`{command.shown()}` may match {pattern.text!r} ({why})", command.shown()
        )


@dataclasses.dataclass(frozen=True)
class AskRule(CommandRule):
    name: ClassVar[str] = "ask"
    help: ClassVar[str] = "commands matching PATTERN ask"


@dataclasses.dataclass(frozen=True)
class DenyRule(CommandRule):
    name: ClassVar[str] = "deny"
    outcome: ClassVar[Outcome] = Outcome.DENY
    help: ClassVar[str] = "commands matching PATTERN are denied"


@dataclasses.dataclass(frozen=True)
class AskWriteOutside(Rule):
    name: ClassVar[str] = "ask-write-outside"
    params: ClassVar[tuple[str, ...]] = ("path",)
    help: ClassVar[str] = "writing or editing a file outside PATH asks"
    path: str = ""

    def __post_init__(self) -> None:
        if not self.path or not posixpath.isabs(self.path):
            raise RuleError(f"ask-write-outside needs an absolute folder, not {self.path!r}")
        object.__setattr__(self, "path", posixpath.normpath(self.path))

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or request.action not in ("write", "edit"):
            return None
        for path in request.paths:
            inside = posixpath.normpath(path)
            if inside != self.path and not inside.startswith(self.path.rstrip("/") + "/"):
                return self._match(Outcome.ASK, f"{path} is outside {self.path}", path)
        if not request.paths:
            return self._match(
                Outcome.ASK, f"cannot tell which file {request.tool} writes", request.tool
            )
        return None


@dataclasses.dataclass(frozen=True)
class MaxToolCalls(Rule):
    name: ClassVar[str] = "max-tool-calls"
    params: ClassVar[tuple[str, ...]] = ("n",)
    help: ClassVar[str] = "more than N tool calls in one turn ask"
    n: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", int(_positive(self.n, "max-tool-calls's N")))

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action":
            return None
        earlier = sum(1 for call_id, _ in state.turn_calls if call_id != request.call_id)
        if earlier < self.n:
            return None
        return self._match(
            Outcome.ASK,
            f"this turn already made {earlier} tool calls (more than {self.n} ask)",
            f"{self.n} calls",
        )

    def state_text(self, state: PolicyState) -> str:
        return f"{len(state.turn_calls)} this turn"


@dataclasses.dataclass(frozen=True)
class LoopGuard(Rule):
    name: ClassVar[str] = "loop-guard"
    params: ClassVar[tuple[str, ...]] = ("n",)
    help: ClassVar[str] = "the same call made N times in a row asks"
    n: int = 0

    def __post_init__(self) -> None:
        n = int(_positive(self.n, "loop-guard's N"))
        if n < 2:
            raise RuleError("loop-guard's N must be at least 2")
        object.__setattr__(self, "n", n)

    def check(self, request: Request, state: PolicyState) -> Match | None:
        if request.kind != "action" or not request.key:
            return None
        repeats = 1
        for call_id, key in reversed(state.turn_calls):
            if call_id == request.call_id:
                continue
            if key != request.key:
                break
            repeats += 1
        if repeats < self.n:
            return None
        return self._match(
            Outcome.ASK,
            f"the same call, {request.summary or request.tool!r}, {repeats} times in a row",
            request.key,
        )


#: What a remote's default branch is when the advertisement did not say.
BUILTINS: dict[str, type[Rule]] = {
    cls.name: cls
    for cls in (PushAfterInstall, PushOwnBranches, PushBranch, PauseEvery, BudgetRule, AskRule,
                DenyRule, AskWriteOutside, MaxToolCalls, LoopGuard, AllowHost, DenyHost,
                AskPython, AllowTool, AskTool, DenyTool, ReadOnlyFile)
}  # fmt: skip
#: The rules on by default (a policy file's ``enabled = false`` or ``%policy off`` turns one off).
DEFAULT_RULES: tuple[type[Rule], ...] = (PushAfterInstall, PushOwnBranches, AskPython)


def make_rule(
    name: str,
    args: list[Any] | dict[str, Any],
    level: str,
    *,
    resolve_path: Callable[[str], str] | None = None,
) -> Rule:
    """A rule from its name and arguments (positional, or by parameter name); RuleError when
    the name or the arguments are wrong."""
    cls = BUILTINS.get(name)
    if cls is None:
        raise RuleError(f"unknown rule {name!r}; the rules are: {', '.join(BUILTINS)}")
    if issubclass(cls, AmountRule):
        return cls(level, cls.amount_of(args))
    if isinstance(args, dict):
        extra = set(args) - set(cls.params)
        if extra:
            raise RuleError(
                f"{name} takes {', '.join(cls.params) or 'no arguments'}, "
                f"not {', '.join(sorted(extra))}"
            )
        values = [args.get(p) for p in cls.params]
    else:
        values = list(args)
        if name in ("ask", "deny") and values:
            values = [" ".join(str(v) for v in values)]
    if len(values) != len(cls.params) or any(v is None for v in values):
        usage = " ".join(p.upper() for p in cls.params)
        raise RuleError(f"{name} takes {usage or 'no arguments'} (usage: {name} {usage})".strip())
    if name in ("ask-write-outside", "read-only-file") and resolve_path is not None:
        values = [resolve_path(str(values[0]))]
    return cls(level, *values)
