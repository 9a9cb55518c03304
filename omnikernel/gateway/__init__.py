"""The model gateway: spend measured on the wire, credentials kept out of the agent, record and
replay. See `server` for the gateway itself, `meter` and `pricing` for how spend is measured,
`ledger` for totals and the budget, `limits` for the usage limits upstreams report, `cassette`
for record and replay."""

from .cassette import CassetteMismatchError, CassettePlayer, CassetteRecorder, Exchange
from .ledger import Budget, SpendLedger, SpendRecord, SpendRow, cross_check
from .limits import LimitWindow, UsageLimits, read_limits
from .meter import StreamMeter, TokenUsage, usage_of_body
from .pricing import Price, PriceTable
from .server import Gateway

__all__ = [
    "Budget",
    "CassetteMismatchError",
    "CassettePlayer",
    "CassetteRecorder",
    "Exchange",
    "Gateway",
    "LimitWindow",
    "Price",
    "PriceTable",
    "SpendLedger",
    "SpendRecord",
    "SpendRow",
    "StreamMeter",
    "TokenUsage",
    "UsageLimits",
    "cross_check",
    "read_limits",
    "usage_of_body",
]
