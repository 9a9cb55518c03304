"""Amounts a budget or a pause is set in: USD, or tokens. Pure.

People type them in `%budget`, `%policy add pause-every` and policy files: ``5``, ``$5``,
``5 usd`` are dollars; ``2M tokens``, ``500k tok``, ``1_000_000 tokens`` are tokens (``k`` =
thousand, ``M`` = million, ``B``/``G`` = billion). A multiplier without the word tokens
(``2M``) is refused rather than guessed at. `parse_amount` raises `AmountError` with what to
type instead.

Which tokens count (`counted_tokens`): input and output as the gateway meters them on the wire,
with prompt-cache *writes* counted as input (they are input the model read for the first time)
and cache *reads* left out: a cache read is the conversation so far, read again on every call,
and counting it would count the same text once per model call (a 40-call turn over a 100k-token
conversation would "use" 4M tokens). Cache reads are still shown beside the count.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

USD = "usd"
TOKENS = "tokens"
TOKEN_WORDS = {"tokens", "token", "tok", "toks"}
USD_WORDS = {"usd", "dollars", "dollar"}
MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000, "g": 1_000_000_000}
EXAMPLES = "USD ($5, 5 usd) or tokens (2M tokens, 500k tok)"
_AMOUNT = re.compile(
    r"^\s*(?P<dollar>\$)?\s*(?P<number>[0-9][0-9_,]*(?:\.[0-9]*)?|\.[0-9]+)\s*"
    r"(?P<mult>[kKmMbBgG])?\s*(?P<unit>[A-Za-z]+)?\s*$"
)


class AmountError(ValueError):
    """Not an amount; the message says what one looks like."""


@dataclasses.dataclass(frozen=True)
class Amount:
    """A positive amount: `value` USD, or `value` (a whole number) tokens."""

    value: float
    unit: str = USD

    @property
    def is_tokens(self) -> bool:
        return self.unit == TOKENS

    @property
    def key(self) -> float | str:
        """What pauses are remembered by: the bare number for USD (as before tokens existed),
        ``"<n> tokens"`` for tokens, so the two never collide."""
        return self.value if self.unit == USD else f"{int(self.value)} tokens"

    def of(self, spent_usd: float, spent_tokens: int) -> float:
        """The spend in this amount's unit."""
        return float(spent_tokens) if self.is_tokens else spent_usd

    def show(self, value: float | None = None) -> str:
        """`value` (default: this amount) in this unit: ``$5.00`` / ``2M tokens``."""
        value = self.value if value is None else value
        return f"{tokens_text(int(value))} tokens" if self.is_tokens else f"${value:.2f}"

    def spent_text(self, spent: float) -> str:
        """What was spent, as precise as it matters: ``$0.0123`` / ``12,345 tokens``."""
        return f"{int(spent):,} tokens" if self.is_tokens else f"${spent:.4f}"

    def words(self) -> str:
        """As typed back: ``5`` (USD, as before) / ``2M tokens``."""
        return f"{tokens_text(int(self.value))} tokens" if self.is_tokens else f"{self.value:g}"

    def __str__(self) -> str:
        return self.words()


def tokens_text(n: int) -> str:
    """A token count short: 2M, 1.5M, 500k, 12,345."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= size and (n * 10) % size == 0:
            return f"{n / size:g}{suffix}"
    return f"{n:,}"


def parse_amount(text: Any, what: str = "the amount", default_unit: str = USD) -> Amount:
    """`text` (a string or a number; a number is in `default_unit`) -> Amount."""
    if isinstance(text, bool):
        raise AmountError(f"{what} must be a number of {EXAMPLES}, not {text!r}")
    if isinstance(text, int | float):
        return _checked(float(text), default_unit, what, repr(text))
    raw = str(text)
    found = _AMOUNT.match(raw)
    if not found:
        number = raw.strip().lstrip("$").strip()
        if number.startswith("-") or number in ("0", "0.0"):
            raise AmountError(f"{what} must be positive, not {raw!r}: {EXAMPLES}")
        raise AmountError(f"{what} must be a number of {EXAMPLES}, not {raw!r}")
    unit_word = (found["unit"] or "").lower()
    mult = (found["mult"] or "").lower()
    if unit_word in TOKEN_WORDS:
        unit = TOKENS
    elif unit_word in USD_WORDS or (not unit_word and found["dollar"]):
        unit = USD
    elif not unit_word:
        if mult:  # "2M": millions of what?
            raise AmountError(
                f"{what}: {raw.strip()!r} has no unit; say {raw.strip()} tokens for tokens, "
                f"or a plain number for USD"
            )
        unit = default_unit
    else:
        raise AmountError(f"{what}: unknown unit {found['unit']!r} in {raw!r}; use {EXAMPLES}")
    if found["dollar"] and unit == TOKENS:
        raise AmountError(f"{what}: {raw!r} mixes $ and tokens; use {EXAMPLES}")
    if unit == USD and mult:
        raise AmountError(f"{what}: {raw!r}: k/M multipliers are for tokens; give USD plainly ($5)")
    value = float(found["number"].replace("_", "").replace(",", "")) * MULTIPLIERS[mult]
    return _checked(value, unit, what, repr(raw))


def _checked(value: float, unit: str, what: str, shown: str) -> Amount:
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise AmountError(f"{what} must be positive, not {shown}: {EXAMPLES}")
    if unit == TOKENS:
        if value != int(value):
            raise AmountError(f"{what} must be a whole number of tokens, not {shown}")
        return Amount(float(int(value)), TOKENS)
    return Amount(value, USD)


def counted_tokens(usage: Mapping[str, Any] | Any) -> int:
    """The tokens one metered call counts toward a token budget (see the module docstring):
    input + cache writes + output, from a spend record (object or dict)."""
    get = usage.get if isinstance(usage, Mapping) else lambda k, d=0: getattr(usage, k, d)
    return sum(int(get(k, 0) or 0) for k in ("input_tokens", "cache_write_tokens", "output_tokens"))
