"""Model prices from `genai-prices` (Pydantic's maintained price data), overridable.

Pure and offline: the data is the snapshot shipped inside the installed package; its
`UpdatePrices` helper, which fetches newer data, is never started (the gateway reaches only the
agent's upstream). genai-prices matches dated and suffixed model names (``claude-sonnet-4-5-
20250929``, ``claude-opus-4-8[1m]``), applies tiered prices (more than 200k input tokens) and
cache prices. ``c.OmniKernel.prices`` overrides take precedence, per vendor or for every vendor.

Token counts are *normalised* before pricing (see `meter.TokenUsage`): `input_tokens` never
includes cached tokens, so they are added back for genai-prices, which counts them in the
input. A model neither source knows is unpriced (`None`), never free.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from omnikernel.gateway.meter import TokenUsage

#: The genai-prices provider id of each vendor the gateway speaks to.
PROVIDER_OF_VENDOR = {"anthropic": "anthropic", "openai": "openai", "gemini": "google"}
SOURCE = "genai-prices"


@dataclasses.dataclass(frozen=True)
class Price:
    """USD per million tokens (the base tier where prices are tiered)."""

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


def _base(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float | Decimal):
        return float(value)
    return float(getattr(value, "base", 0) or 0)  # genai-prices' TieredPrices


@functools.cache
def _library_match(provider: str, model: str) -> Any:
    """genai-prices' model info for `model`, or None."""
    from genai_prices import data_snapshot

    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    return info


class PriceTable:
    """Overrides first, then genai-prices."""

    def __init__(self, overrides: dict[str, dict[str, Price]] | None = None):
        #: Overrides by vendor ("*": every vendor), then model.
        self.overrides = overrides or {}

    @functools.cached_property
    def source(self) -> str:
        """Where prices come from; genai-prices loads only when a price is first needed (it
        takes about half a second to import, which the kernel's start must not pay)."""
        from genai_prices import __version__

        return f"{SOURCE} {__version__}"

    @classmethod
    def load(cls, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> PriceTable:
        """genai-prices with `overrides` on top: ``{"vendor/model": {"input": ...}}`` or
        ``{"model": {...}}`` (then it applies to every vendor)."""
        table: dict[str, dict[str, Price]] = {}
        for key, price in (overrides or {}).items():
            vendor, _, model = key.rpartition("/")
            table.setdefault(vendor or "*", {})[model] = Price.from_dict(price)
        return cls(table)

    def _override(self, vendor: str, model: str) -> Price | None:
        for scope in (vendor, "*"):
            if model in self.overrides.get(scope, {}):
                return self.overrides[scope][model]
        return None

    def model_id(self, vendor: str, model: str) -> str | None:
        """The name genai-prices matched `model` to (None if it did not)."""
        info = _library_match(PROVIDER_OF_VENDOR.get(vendor, vendor), model)
        return info.id if info is not None else None

    def lookup(self, vendor: str, model: str) -> Price | None:
        """The (base-tier) price of `model`, or None: unpriced."""
        if (price := self._override(vendor, model)) is not None:
            return price
        info = _library_match(PROVIDER_OF_VENDOR.get(vendor, vendor), model)
        if info is None:
            return None
        prices = info.prices
        if not hasattr(prices, "input_mtok"):  # prices that change over time: the current ones
            prices = info.get_prices(datetime.now(UTC))
        return Price(
            _base(prices.input_mtok),
            _base(prices.output_mtok),
            _base(prices.cache_read_mtok),
            _base(prices.cache_write_mtok),
        )

    def cost(self, vendor: str, usage: TokenUsage) -> float | None:
        if (price := self._override(vendor, usage.model)) is not None:
            return price.cost(usage)
        from genai_prices import Usage, calc_price

        provider = PROVIDER_OF_VENDOR.get(vendor, vendor)
        if _library_match(provider, usage.model) is None:
            return None
        cached = usage.cache_read_tokens + usage.cache_write_tokens
        result = calc_price(
            Usage(
                input_tokens=usage.input_tokens + cached,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            ),
            usage.model,
            provider_id=provider,
        )
        return float(result.total_price)
