"""Spend: one record per model exchange, totals by harness and model, and the session budget.

Pure. The gateway produces a `SpendRecord` for every exchange it meters; the ledger adds them
up. Unpriced exchanges (a model missing from the price table) are counted apart, never as $0.
The budget caps USD (the API-equivalent price on a plan), tokens (`amounts.counted_tokens`),
or both: whichever is reached first stops the session.

A call the offline rehearsal model answered is a `rehearsal` record: nothing was spent, so it
costs $0 (budgets and USD pauses do not count it; its tokens still count), and every place that
shows spend says "rehearsal" rather than a price. A scenario may price its calls on purpose
(`priced_as` names the model), for a demonstration or a test of USD rules without an API key.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from omnikernel.gateway.meter import TokenUsage
from omnikernel.policy.amounts import TOKENS, USD, Amount, counted_tokens


@dataclasses.dataclass(frozen=True)
class SpendRecord:
    harness: str
    vendor: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None  # None: the model has no price
    session: str = ""
    cell: str = ""
    estimated: bool = False  # the vendor reported no usage (or the stream was cut)
    plan: bool = False  # paid by a plan login: cost_usd is the API-equivalent price, not spent
    rehearsal: bool = False  # answered by the offline rehearsal model: nothing was spent
    priced_as: str = ""  # a rehearsal priced on purpose as this model (else it costs $0)
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def priced(self) -> bool:
        return self.cost_usd is not None

    @property
    def tokens(self) -> int:
        """What this call counts toward a token budget (cache reads left out)."""
        return counted_tokens(self)

    @classmethod
    def of(
        cls, harness: str, vendor: str, usage: TokenUsage, cost: float | None, **place: Any
    ) -> SpendRecord:
        return cls(
            harness,
            vendor,
            usage.model,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            cost,
            **place,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpendRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclasses.dataclass
class SpendRow:
    harness: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_tokens: int = 0
    #: Counted toward a token budget: input + cache writes + output.
    tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    plan: bool = False  # some calls went on a plan: cost_usd is partly an API-equivalent price
    rehearsal: int = 0  # calls the offline rehearsal model answered
    priced_as: str = ""  # the model rehearsal calls were priced as on purpose, if any

    def cost_text(self) -> str:
        """The row's cost as `%spend` and the gauge show it: rehearsal calls say so."""
        if self.rehearsal == self.requests and not self.priced_as:
            return "$0 (rehearsal)"
        text = ("plan, API-equivalent " if self.plan else "") + f"${self.cost_usd:.4f}"
        if self.unpriced:
            text += f" + {self.unpriced} unpriced"
        if self.priced_as:
            text += f" (rehearsal priced as {self.priced_as})"
        elif self.rehearsal:
            text += f" ({self.rehearsal} rehearsal call(s) at $0)"
        return text


class SpendLedger:
    def __init__(self, records: Iterable[SpendRecord] = ()):
        self.records: list[SpendRecord] = list(records)

    def add(self, record: SpendRecord) -> None:
        self.records.append(record)

    @property
    def total_usd(self) -> float:
        return sum(r.cost_usd for r in self.records if r.cost_usd is not None)

    @property
    def total_tokens(self) -> int:
        """Tokens counted toward a token budget (see `amounts.counted_tokens`)."""
        return sum(r.tokens for r in self.records)

    @property
    def cache_read_tokens(self) -> int:
        return sum(r.cache_read_tokens for r in self.records)

    @property
    def unpriced(self) -> int:
        return sum(1 for r in self.records if r.cost_usd is None)

    @property
    def rehearsal(self) -> int:
        """Calls the offline rehearsal model answered at $0 (not priced on purpose)."""
        return sum(1 for r in self.records if r.rehearsal and not r.priced_as)

    @property
    def only_rehearsal(self) -> bool:
        """Every call so far was a $0 rehearsal: there is no money to show."""
        return bool(self.records) and self.rehearsal == len(self.records)

    def by_harness_and_model(self) -> list[SpendRow]:
        rows: dict[tuple[str, str], SpendRow] = {}
        for r in self.records:
            row = rows.setdefault((r.harness, r.model), SpendRow(r.harness, r.model))
            row.requests += 1
            row.plan = row.plan or r.plan
            row.rehearsal += r.rehearsal
            row.priced_as = row.priced_as or r.priced_as
            row.input_tokens += r.input_tokens
            row.output_tokens += r.output_tokens
            row.cache_tokens += r.cache_read_tokens + r.cache_write_tokens
            row.tokens += r.tokens
            if r.cost_usd is None:
                row.unpriced += 1
            else:
                row.cost_usd += r.cost_usd
        return [rows[k] for k in sorted(rows)]


@dataclasses.dataclass
class Budget:
    """The session's caps: USD and tokens, each None for no cap."""

    limit_usd: float | None = None
    limit_tokens: int | None = None

    @property
    def active(self) -> bool:
        return self.limit_usd is not None or self.limit_tokens is not None

    def limits(self) -> list[Amount]:
        out = []
        if self.limit_usd is not None:
            out.append(Amount(self.limit_usd, USD))
        if self.limit_tokens is not None:
            out.append(Amount(float(self.limit_tokens), TOKENS))
        return out

    def set(self, amount: Amount) -> None:
        if amount.is_tokens:
            self.limit_tokens = int(amount.value)
        else:
            self.limit_usd = amount.value

    def reached(
        self, spent: float, pending: float = 0.0, tokens: int = 0, pending_tokens: int = 0
    ) -> Amount | None:
        """The cap that `spent` USD and `tokens` (plus what is pending) reach, if any."""
        if self.limit_usd is not None and spent + pending >= self.limit_usd:
            return Amount(self.limit_usd, USD)
        if self.limit_tokens is not None and tokens + pending_tokens >= self.limit_tokens:
            return Amount(float(self.limit_tokens), TOKENS)
        return None

    def exceeded(
        self, spent: float, pending: float = 0.0, tokens: int = 0, pending_tokens: int = 0
    ) -> bool:
        return self.reached(spent, pending, tokens, pending_tokens) is not None

    def message(self, spent: float, tokens: int = 0) -> str:
        """What the agent (and so the cell) is told when a cap stops a call."""
        cap = self.reached(spent, tokens=tokens) or (self.limits() or [Amount(0.0)])[0]
        if cap.is_tokens:
            return (
                f"Omnigent budget reached: {tokens:,} tokens metered of the {cap.show()} session "
                f"budget. Raise it with `%budget N tokens` (or `%budget off tokens`) and run the "
                f"cell again; the conversation is kept."
            )
        return (
            f"Omnigent budget reached: ${spent:.4f} spent of the ${cap.value:.2f} "
            f"session budget. Raise it with `%budget N` (or `%budget off`) and run the cell "
            f"again; the conversation is kept."
        )


def cross_check(gateway_usd: float, harness_usd: float | None, tolerance: float = 0.01) -> bool:
    """Does the harness's own cost agree with the gateway's within `tolerance` (relative)?"""
    if harness_usd is None:
        return True
    scale = max(abs(gateway_usd), abs(harness_usd), 1e-9)
    return abs(gateway_usd - harness_usd) / scale <= tolerance
