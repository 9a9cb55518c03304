"""Spend: one record per model exchange, totals by harness and model, and the session budget.

Pure. The gateway produces a `SpendRecord` for every exchange it meters; the ledger adds them
up. Unpriced exchanges (a model missing from the price table) are counted apart, never as $0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import Any

from .meter import TokenUsage


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
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def priced(self) -> bool:
        return self.cost_usd is not None

    @classmethod
    def of(
        cls, harness: str, vendor: str, usage: TokenUsage, cost: float | None, **place: Any
    ) -> SpendRecord:
        return cls(
            harness, vendor, usage.model, usage.input_tokens, usage.output_tokens,
            usage.cache_read_tokens, usage.cache_write_tokens, cost, **place,
        )  # fmt: skip

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
    cost_usd: float = 0.0
    unpriced: int = 0
    plan: bool = False  # some calls went on a plan: cost_usd is partly an API-equivalent price


class SpendLedger:
    def __init__(self, records: Iterable[SpendRecord] = ()):
        self.records: list[SpendRecord] = list(records)

    def add(self, record: SpendRecord) -> None:
        self.records.append(record)

    @property
    def total_usd(self) -> float:
        return sum(r.cost_usd for r in self.records if r.cost_usd is not None)

    @property
    def unpriced(self) -> int:
        return sum(1 for r in self.records if r.cost_usd is None)

    def by_harness_and_model(self) -> list[SpendRow]:
        rows: dict[tuple[str, str], SpendRow] = {}
        for r in self.records:
            row = rows.setdefault((r.harness, r.model), SpendRow(r.harness, r.model))
            row.requests += 1
            row.plan = row.plan or r.plan
            row.input_tokens += r.input_tokens
            row.output_tokens += r.output_tokens
            row.cache_tokens += r.cache_read_tokens + r.cache_write_tokens
            if r.cost_usd is None:
                row.unpriced += 1
            else:
                row.cost_usd += r.cost_usd
        return [rows[k] for k in sorted(rows)]


@dataclasses.dataclass
class Budget:
    """A session cap in USD; None means no cap."""

    limit_usd: float | None = None

    def exceeded(self, spent: float, pending: float = 0.0) -> bool:
        return self.limit_usd is not None and spent + pending >= self.limit_usd

    def message(self, spent: float) -> str:
        return (
            f"Omnigent budget reached: ${spent:.4f} spent of the ${self.limit_usd:.2f} "
            f"session budget. Raise it with `%budget N` (or `%budget off`) and run the cell "
            f"again; the conversation is kept."
        )


def cross_check(gateway_usd: float, harness_usd: float | None, tolerance: float = 0.01) -> bool:
    """Does the harness's own cost agree with the gateway's within `tolerance` (relative)?"""
    if harness_usd is None:
        return True
    scale = max(abs(gateway_usd), abs(harness_usd), 1e-9)
    return abs(gateway_usd - harness_usd) / scale <= tolerance
