"""`%spend`, `%budget`: what the session spent, and the most it may.

IPython line magics acting on the kernel's `AgentSession` (see `omnikernel.kernel.magics`)."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class
from IPython.display import display

from omnikernel.kernel.magics.common import SessionMagicsBase, show, table
from omnikernel.policy.amounts import TOKENS, AmountError, parse_amount


@magics_class
class SpendMagics(SessionMagicsBase):
    @line_magic
    def spend(self, line: str) -> None:
        """%spend: what this session spent and metered, by harness and model, at the gateway;
        the budget, the next pause and the usage limits the upstreams report."""
        session = self.session
        rows = [
            [
                r.harness,
                r.model,
                r.requests,
                f"{r.input_tokens:,}",
                f"{r.output_tokens:,}",
                f"{r.cache_tokens:,}",
                f"{r.tokens:,}",
                r.cost_text(),
            ]
            for r in session.ledger.by_harness_and_model()
        ]
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
        from omnikernel.kernel.widgets import SpendGauge, widget_bundle

        gauge = SpendGauge(self.session)
        listeners = self.session.spend_listeners  # the latest few gauges stay live
        listeners[:] = [*listeners[-4:], gauge.refresh]
        display(widget_bundle(gauge, gauge.text()), raw=True)

    @line_magic
    def budget(self, line: str) -> None:
        """%budget [USD | N tokens | off [usd|tokens]]: cap this session's spend in USD (on a
        plan, the API-equivalent price) or in metered tokens (`%budget 2M tokens`); the gateway
        holds the next call past a cap and cuts a stream that crosses it."""
        usage = (
            "Usage: %budget 5 (USD) | %budget 2M tokens | %budget off | "
            "%budget off tokens | %budget off usd"
        )
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
            show(
                f"No budget: ${state.spent_usd:.4f} spent, {state.spent_tokens:,} tokens metered. "
                f"Set one with %budget 5.00 (USD) or %budget 2M tokens."
            )
            return
        for cap in budget.limits():
            spent = cap.spent_text(cap.of(state.spent_usd, state.spent_tokens))
            verb = "metered" if cap.unit == TOKENS else "spent"
            note = " (input + cache writes + output; cache reads do not count)" * (
                cap.unit == TOKENS
            )
            show(f"Budget {cap.show()}: {spent} {verb}{note}.")
