"""Model prices: a dated table shipped as data (`omnikernel/data/prices.json`), overridable.

Pure. Prices are USD per million tokens, per vendor and model. Token counts are *normalised*
before pricing (see `meter.TokenUsage`): `input_tokens` never includes cached tokens, so one
formula serves every vendor. A model that is not in the table is unpriced (`None`), never free.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .meter import TokenUsage

PRICES_FILE = Path(__file__).resolve().parent.parent / "data" / "prices.json"
DATE_SUFFIX = re.compile(r"-\d{8}$")


@dataclasses.dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Price:
        return cls(
            float(d.get("input", 0)),
            float(d.get("output", 0)),
            float(d.get("cacheRead", d.get("cache_read", 0)) or 0),
            float(d.get("cacheWrite", d.get("cache_write", 0)) or 0),
        )

    def cost(self, usage: TokenUsage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / 1_000_000


class PriceTable:
    def __init__(self, vendors: dict[str, dict[str, Price]], generated: str = "", source: str = ""):
        self.vendors = vendors
        self.generated = generated
        self.source = source

    @classmethod
    def load(
        cls, path: Path = PRICES_FILE, overrides: Mapping[str, Mapping[str, Any]] | None = None
    ) -> PriceTable:
        """The shipped table, with `overrides` on top: ``{"vendor/model": {"input": ...}}`` or
        ``{"model": {...}}`` (then it applies to every vendor)."""
        data = json.loads(path.read_text())
        vendors = {
            vendor: {model: Price.from_dict(p) for model, p in models.items()}
            for vendor, models in data.get("vendors", {}).items()
        }
        for key, price in (overrides or {}).items():
            vendor, _, model = key.rpartition("/")
            for name in [vendor] if vendor else list(vendors) or ["anthropic", "openai"]:
                vendors.setdefault(name, {})[model] = Price.from_dict(price)
        return cls(vendors, data.get("generated", ""), data.get("source", ""))

    def lookup(self, vendor: str, model: str) -> Price | None:
        models = self.vendors.get(vendor, {})
        if model in models:
            return models[model]
        undated = DATE_SUFFIX.sub("", model)
        return models.get(undated)

    def cost(self, vendor: str, usage: TokenUsage) -> float | None:
        price = self.lookup(vendor, usage.model)
        return None if price is None else price.cost(usage)
