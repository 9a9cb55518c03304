"""The model gateway: spend measured on the wire, credentials kept out of the agent, record and
replay. See `server` for the gateway itself (what it knows and decides in `state`, its request
handlers in `handlers` and, for model calls, `calls`, their HTTP client in `client`), `meter`
and `pricing` for how spend is measured, `ledger` for totals and the budget, `limits` for the
usage limits upstreams report, `cassette` for record and replay."""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from omnikernel.gateway.server import Gateway


def __getattr__(name: str) -> Any:
    """`Gateway` is imported when first named: its server (tornado's web and HTTP server,
    the wire formats, the HTTP client) is ~25 ms that a kernel's start does without; the
    session starts the gateway with its first agent (see `omnikernel.session.upstreams`)."""
    if name == "Gateway":
        from omnikernel.gateway.server import Gateway

        return Gateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
