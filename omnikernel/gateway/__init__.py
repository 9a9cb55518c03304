"""The model gateway: spend measured on the wire, credentials kept out of the agent, record and
replay. See `server` for the gateway itself, `meter` and `pricing` for how spend is measured,
`ledger` for totals and the budget, `limits` for the usage limits upstreams report, `cassette`
for record and replay."""

from omnikernel.gateway.cassette import (
    CassetteMismatchError,
    CassettePlayer,
    CassetteRecorder,
    Exchange,
)
from omnikernel.gateway.ledger import Budget, SpendLedger, SpendRecord, SpendRow, cross_check
from omnikernel.gateway.limits import LimitWindow, UsageLimits, read_limits
from omnikernel.gateway.meter import StreamMeter, TokenUsage, usage_of_body
from omnikernel.gateway.pricing import Price, PriceTable
from omnikernel.gateway.server import Gateway

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
