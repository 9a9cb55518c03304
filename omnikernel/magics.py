"""The kernel's line magics: `%agent`, `%agents`, `%history`, `%autoapprove`.

They are ordinary IPython magics (so `%lsmagic` and `%agent?` work) acting on the kernel's
`AgentSession`. Cell-level routing (`%%agent NAME`, `%%python`) lives in the kernel, because a
prompt runs asynchronously and IPython cell magics cannot.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from .amounts import TOKENS, AmountError, parse_amount
from .approval import AUTO_APPROVE_ENV
from .gateway import CassetteMismatchError
from .harnesses import HarnessError
from .sandbox import CHOICES, SandboxUnavailableError
from .sandbox import resolve as resolve_sandbox
from .sanitize import agent_bundle

if TYPE_CHECKING:
    from .session import AgentSession

#: What `%agent` and friends say when asked something they do not know.
MAGICS_HELP = (
    "Omnigent magics: %agent [NAME [--model M]], %agents, "
    "%%agent NAME [--model M] [--review] [--out VAR], %fix [NOTE], "
    "%history, %spend, %budget [USD|N tokens|off], %record [FILE|off], %replay FILE|off, "
    "%sandbox [auto|bwrap|firejail|off|allow HOST|read PATH], %autoapprove [on|off], "
    "%session [new|fork [NAME]|list|NAME], %fork [NAME], %export md|html|jsonl|ipynb [FILE], "
    "%policy, %share [feed|revoke [ro|rw|all]], %%python. "
    "IPython's own: %lsmagic."
)


@dataclasses.dataclass(frozen=True)
class AgentArgs:
    name: str | None = None
    model: str | None = None
    review: bool = False
    out: str | None = None  # a Python name the answer is also stored in


def parse_agent_args(line: str, allow_review: bool = False) -> AgentArgs:
    """`NAME [--model M] [--review] [--out VAR]` -> AgentArgs; raises UsageError with the usage
    on bad input (``--review`` and ``--out`` only where `allow_review`: in a ``%%agent``
    cell)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse {line!r}: {exc}. Usage: %agent NAME [--model M]") from None
    name = model = None
    review = False
    out = None
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--review" and allow_review:
            review, i = True, i + 1
            continue
        if (word == "--out" or word.startswith("--out=")) and allow_review:
            if word == "--out":
                if i + 1 >= len(words):
                    raise UsageError("--out needs a Python name. Usage: %%agent NAME --out VAR")
                out, i = words[i + 1], i + 2
            else:
                out, i = word.split("=", 1)[1], i + 1
            if not out.isidentifier() or keyword.iskeyword(out):
                raise UsageError(f"--out takes a Python variable name, not {out!r}")
            continue
        if word in ("--model", "-m"):
            if i + 1 >= len(words):
                raise UsageError("--model needs a value. Usage: %agent NAME [--model M]")
            model, i = words[i + 1], i + 2
            continue
        if word.startswith("--model="):
            model = word.split("=", 1)[1]
        elif word.startswith("-"):
            raise UsageError(f"unknown option {word!r}. Usage: %agent NAME [--model M]")
        elif name is None:
            name = word
        else:
            raise UsageError(f"unexpected {word!r}. Usage: %agent NAME [--model M]")
        i += 1
    return AgentArgs(name, model, review, out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, str]:
    """A table as HTML (JupyterLab; cells may hold agent text, so it goes through `sanitize`)
    and aligned plain text (consoles, nbclient)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    plain = [line(headers)] + [line(r) for r in cells]

    def md_cell(text: str) -> str:
        # `$` escaped: two of them in a cell would render as LaTeX math in JupyterLab.
        return text.replace("|", "\\|").replace("\n", " ").replace("$", "\\$")

    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in cells]
    return agent_bundle("\n".join(md), "\n".join(plain))


def show(plain: str, markdown: str | None = None) -> None:
    display(agent_bundle(markdown or plain, plain), raw=True)


def turn_cost(cost: Any, rehearsal: bool) -> str:
    """A turn's cost for `%history`: a rehearsal's $0 says it is one (nothing was spent)."""
    if rehearsal and cost == 0:
        return "$0 (rehearsal)"
    return f"${cost:.4f}" if isinstance(cost, int | float) else "-"


@magics_class
class OmniMagics(Magics):
    def __init__(self, shell: Any, session: AgentSession):
        super().__init__(shell)
        self.session = session

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
                    info.install,
                ]
            )
        headers = ["harness", "agent", "installed", "version", "binary", "upstream",
                   "credential", "sandbox", "install"]  # fmt: skip
        display(table(headers, rows), raw=True)

    @line_magic
    def history(self, line: str) -> None:
        """%history: this session's agent turns (prompt, harness, tools, tokens, cost, status)."""
        turns = self.session.turns()
        if not turns:
            show("No agent turns in this session yet: run a prompt cell first.")
            return
        rows = []
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
                ]
            )
        display(
            table(["turn", "harness", "prompt", "tool calls", "tokens", "cost", "status"], rows),
            raw=True,
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
            "approval says so in its cell. A rule's ask or deny still applies (see %policy)."
            if self.session.auto_approve
            else f" Actions that change things ask for approval in the cell (start the kernel "
            f"with {AUTO_APPROVE_ENV}=1 or run %autoapprove on to approve those no rule asks "
            f"about)."
        )
        show(f"Auto-approval is {state}.{note}")

    @line_magic
    def spend(self, line: str) -> None:
        """%spend: what this session spent and metered, by harness and model, at the gateway;
        the budget, the next pause and the usage limits the upstreams report."""
        session = self.session
        rows = [
            [r.harness, r.model, r.requests, f"{r.input_tokens:,}", f"{r.output_tokens:,}",
             f"{r.cache_tokens:,}", f"{r.tokens:,}", r.cost_text()]
            for r in session.ledger.by_harness_and_model()
        ]  # fmt: skip
        if not rows:
            show("No model calls in this session yet.")
        else:
            headers = ["harness", "model", "calls", "input", "output", "cache", "tokens", "cost"]
            display(table(headers, rows), raw=True)
        self._gauge()
        if rows:
            ledger = session.ledger
            total = f"Session total: ${ledger.total_usd:.4f}"
            if ledger.only_rehearsal:
                total = "Session total: $0 (rehearsal: the offline rehearsal model spends nothing)"
            elif ledger.rehearsal:
                total += f" ({ledger.rehearsal} rehearsal call(s) at $0)"
            if ledger.unpriced:
                total += f" plus {ledger.unpriced} call(s) to unpriced models"
            if any(r.plan for r in ledger.records):
                total += " (calls on a plan login count at their API-equivalent price: not spent)"
            total += f" · {ledger.total_tokens:,} tokens (input + cache writes + output"
            if ledger.cache_read_tokens:
                total += f"; {ledger.cache_read_tokens:,} cache reads not counted"
            total += ")"
            show(total)
        if line := session.spend_line():
            show(line[0].upper() + line[1:] + ".")
        for upstream, limits in sorted(session.usage_limits().items()):
            who = ", ".join(sorted(limits.harnesses))
            show(f"Usage limits of {upstream} ({who}), as it reports them: {limits.text()}")

    def _gauge(self) -> None:
        """The live spend gauge, updated as the gateway meters each call."""
        from .widgets import SpendGauge, widget_bundle

        gauge = SpendGauge(self.session)
        listeners = self.session.spend_listeners  # the latest few gauges stay live
        listeners[:] = [*listeners[-4:], gauge.refresh]
        display(widget_bundle(gauge, gauge.text()), raw=True)

    @line_magic
    def budget(self, line: str) -> None:
        """%budget [USD | N tokens | off [usd|tokens]]: cap this session's spend in USD (on a
        plan, the API-equivalent price) or in metered tokens (`%budget 2M tokens`); the gateway
        holds the next call past a cap and cuts a stream that crosses it."""
        usage = ("Usage: %budget 5 (USD) | %budget 2M tokens | %budget off | "
                 "%budget off tokens | %budget off usd")  # fmt: skip
        words = line.strip().lower().split()
        session = self.session
        budget = session.budget
        if words and (words[0] in ("off", "none") or words[-1] == "off"):
            rest = [w for w in words if w not in ("off", "none")]
            if not rest:
                budget.limit_usd = budget.limit_tokens = None
            elif len(rest) == 1 and rest[0] in ("tokens", "token", "tok"):
                budget.limit_tokens = None
            elif len(rest) == 1 and rest[0] in ("usd", "$"):
                budget.limit_usd = None
            else:
                raise UsageError(f"cannot read %budget {line.strip()}. {usage}")
        elif words:
            try:
                budget.set(parse_amount(line, "%budget"))
            except AmountError as exc:
                raise UsageError(f"{exc}. {usage}") from None
        state = session.live_state()
        if not budget.active:
            show(f"No budget: ${state.spent_usd:.4f} spent, {state.spent_tokens:,} tokens metered. "
                 f"Set one with %budget 5.00 (USD) or %budget 2M tokens.")  # fmt: skip
            return
        for cap in budget.limits():
            spent = cap.spent_text(cap.of(state.spent_usd, state.spent_tokens))
            verb = "metered" if cap.unit == TOKENS else "spent"
            note = " (input + cache writes + output; cache reads do not count)" * (
                cap.unit == TOKENS)  # fmt: skip
            show(f"Budget {cap.show()}: {spent} {verb}{note}.")

    def _cassette_path(self, word: str) -> Path:
        """FILE as given, else `<notebook>.cassette.jsonl` beside the notebook (or
        `session.cassette.jsonl` in the working directory when the notebook is unknown)."""
        if word:
            return Path(word).expanduser()
        notebook = Path(self.session.notebook)
        if notebook.suffix == ".ipynb":
            return notebook.with_name(f"{notebook.stem}.cassette.jsonl")
        return self.session.cwd / "session.cassette.jsonl"

    @line_magic
    def record(self, line: str) -> None:
        """%record [FILE|off]: save every model exchange to a cassette (keys redacted)."""
        word = line.strip()
        gateway = self.session.gateway
        if word == "off":
            gateway.stop_tape()
            show("Recording stopped.")
            return
        path = self._cassette_path(word)
        gateway.record_to(path)
        show(f"Recording model traffic to {path}. Replay it with %replay {path.name}.")

    @line_magic
    def replay(self, line: str) -> None:
        """%replay FILE|off: answer model calls from a cassette instead of the upstream."""
        word = line.strip()
        gateway = self.session.gateway
        if word == "off":
            gateway.stop_tape()
            show("Replay stopped: model calls go upstream again.")
            return
        path = self._cassette_path(word)
        try:
            count = gateway.replay_from(path)
        except CassetteMismatchError as exc:
            raise UsageError(str(exc)) from None
        carried = ""
        if (earlier := self.session.store.last_turn(self.session.session_id)) > 0:
            carried = (
                f" This session already holds {earlier} turn(s) from before, and the agents are "
                f"handed them (native resume or a handoff): a re-run carries that history. Run "
                f"`%session new` before `%replay` to replay from a clean start."
            )
        show(
            f"Replaying {count} recorded exchange(s) from {path}: no call goes upstream, and a "
            f"call that does not match the cassette is an error.{carried}"
        )

    @line_magic
    def sandbox(self, line: str) -> None:
        """%sandbox [auto|bwrap|firejail|off]: the OS sandbox agents run in (off: opt out).
        %sandbox allow [HOST[:PORT] ...|--clear]: hosts agents may reach (e.g. a registry).
        %sandbox read [PATH ...|--clear]: paths in a home directory agents may read."""
        word = line.strip().lower()
        session = self.session
        if word.split()[:1] == ["allow"]:
            self._allow(line.split()[1:])
            return
        if word.split()[:1] == ["read"]:
            self._read(shlex.split(line)[1:])
            return
        if word:
            if word not in CHOICES:
                raise UsageError(f"%sandbox takes one of {', '.join(CHOICES)}, not {word!r}")
            try:
                backend = resolve_sandbox(word)
            except SandboxUnavailableError as exc:
                raise UsageError(str(exc)) from None
            session.sandbox = word
        else:
            try:
                backend = resolve_sandbox(session.sandbox)
            except SandboxUnavailableError as exc:
                show(f"Sandbox {session.sandbox}: {exc}")
                return
        if backend is None:
            show(
                "⚠ SANDBOX OFF: agents run with your own permissions (your files, secrets and "
                "the network). Every agent cell says so. `%sandbox auto` turns it back on."
            )
        else:
            show(
                f"Sandbox: {backend.name} ({session.sandbox}). Agents may write only the "
                f"notebook's folder and their private dirs (git config and hooks, shell start-up "
                f"files and the other protected paths stay read-only); home directories are "
                f"closed but for the notebook's folder"
                + (f" and {', '.join(map(str, session.readable))}" if session.readable else "")
                + "; Jupyter's dirs, the session store and secrets are hidden; the network is "
                "off but for the model gateway"
                + (f" and {', '.join(session.allow_hosts)}." if session.allow_hosts else ".")
            )

    def _read(self, paths: list[str]) -> None:
        session = self.session
        if paths == ["--clear"]:
            session.readable = ()
        elif paths:
            found = []
            for name in paths:
                path = (session.cwd / os.path.expanduser(name)).resolve()
                if not path.exists():
                    raise UsageError(f"{name!r} does not exist ({path}); name a file or folder")
                found.append(path)
            session.readable = tuple(dict.fromkeys(session.readable + tuple(found)))
        if session.readable:
            show(
                f"Agents may read {', '.join(map(str, session.readable))} (from their next "
                "turn; secrets such as ~/.ssh stay hidden inside); the rest of the home "
                "directories stays closed."
            )
        else:
            show("Home directories are closed to agents but for the notebook's folder.")

    def _allow(self, rules: list[str]) -> None:
        session = self.session
        if rules == ["--clear"]:
            session.allow_hosts = ()
        elif rules:
            for rule in rules:
                host, _, port = rule.partition(":")
                if not host or (port and not port.isdigit()) or "/" in rule:
                    raise UsageError(f"{rule!r} is not HOST, HOST:PORT or *.DOMAIN")
            session.allow_hosts = tuple(dict.fromkeys(session.allow_hosts + tuple(rules)))
        if session.allow_hosts:
            show(
                f"Agents may reach {', '.join(session.allow_hosts)} through the kernel's egress "
                "proxy (from their next turn); every other host stays unreachable."
            )
        else:
            show("No hosts allowed: agents reach only the model gateway.")
