"""Usage limits the upstream reports in its response headers, read into windows. Pure.

The gateway keeps the latest report per upstream for the spend gauge and `%spend`. The headers
(names as the vendors send them, checked against their CLIs and the tools that read them):

- Claude plan logins (Pro/Max), Anthropic's unified limits:
  ``anthropic-ratelimit-unified-status`` (allowed, allowed_warning, rejected),
  ``-representative-claim`` (the window that binds: five_hour, seven_day, ...), ``-reset``,
  and per window (``5h``, ``7d``, ``7d_opus``, ``7d_sonnet``, ...) ``-<w>-utilization`` (a
  fraction, 0.42 = 42 % used), ``-<w>-reset`` (epoch seconds) and ``-<w>-status``;
  ``-overage-status`` when extra usage is on.
- The Anthropic API with a key: ``anthropic-ratelimit-{requests,tokens,input-tokens,
  output-tokens}-{limit,remaining,reset}`` (reset in RFC 3339).
- Codex on a ChatGPT login: ``x-codex-primary-*`` (the short window, usually 300 minutes) and
  ``x-codex-secondary-*`` (the weekly one): ``-used-percent``, ``-window-minutes``,
  ``-reset-at`` (epoch seconds) or ``-reset-after-seconds``; ``x-codex-credits-{has-credits,
  unlimited,balance}``. Other limit families come as ``x-codex-<family>-primary-*``.
- OpenAI with a key: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset as a
  duration such as ``6m0s``).

Unknown headers under those prefixes are kept verbatim, so a new window still shows.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

#: Response headers read as usage limits (lower-case prefixes).
LIMIT_PREFIXES = ("anthropic-ratelimit-", "x-codex-", "x-ratelimit-")
UNIFIED = "anthropic-ratelimit-unified-"
_UNIFIED_WINDOW = re.compile(r"^(?P<w>[0-9a-z_]+)-(?P<field>utilization|reset|status)$")
_CODEX_WINDOW = re.compile(
    r"^x-codex-(?:(?P<family>[a-z0-9_]+)-)?(?P<slot>primary|secondary)-"
    r"(?P<field>used-percent|window-minutes|reset-at|reset-after-seconds)$"
)
_ANTHROPIC_COUNTER = re.compile(
    r"^anthropic-ratelimit-(?P<what>requests|tokens|input-tokens|output-tokens)-"
    r"(?P<field>limit|remaining|reset)$"
)
_OPENAI_COUNTER = re.compile(r"^x-ratelimit-(?P<field>limit|remaining|reset)-(?P<what>[a-z_-]+)$")
WINDOW_NAMES = {"5h": "5-hour", "7d": "weekly", "7d_opus": "weekly Opus",
                "7d_sonnet": "weekly Sonnet", "overage": "extra usage"}  # fmt: skip
CLAIMS = {"five_hour": "5h", "seven_day": "7d", "seven_day_opus": "7d_opus",
          "seven_day_sonnet": "7d_sonnet"}  # fmt: skip


@dataclasses.dataclass
class LimitWindow:
    """One window or counter of a usage limit."""

    name: str
    used_percent: float | None = None
    remaining: str = ""
    limit: str = ""
    resets_at: float | None = None  # epoch seconds
    resets_in: str = ""  # as the upstream says it, when it gives no time
    status: str = ""
    binding: bool = False  # the window the upstream says limits now

    def text(self, now: float) -> str:
        parts = [self.name]
        if self.used_percent is not None:
            parts.append(f"{self.used_percent:.0f}% used")
        if self.remaining:
            parts.append(
                f"{self.remaining}" + (f" of {self.limit}" if self.limit else "") + " left"
            )
        if self.status and self.status != "allowed":
            parts.append(self.status.replace("_", " "))
        if self.resets_at is not None:
            parts.append(f"resets {_when(self.resets_at, now)}")
        elif self.resets_in:
            parts.append(f"resets in {self.resets_in}")
        return " ".join(parts) + (" (binding)" if self.binding else "")


@dataclasses.dataclass
class UsageLimits:
    """The latest usage-limit report of one upstream."""

    upstream: str
    windows: list[LimitWindow]
    status: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    harnesses: set[str] = dataclasses.field(default_factory=set)
    at: float = dataclasses.field(default_factory=time.time)

    @property
    def most_used(self) -> LimitWindow | None:
        """The window closest to its limit (for the gauge's bar)."""
        used = [w for w in self.windows if w.used_percent is not None]
        return max(used, key=lambda w: w.used_percent or 0.0) if used else None

    def text(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        parts = [w.text(now) for w in self.windows]
        if self.status:
            parts.append(f"status {self.status.replace('_', ' ')}")
        parts += self.notes
        if not parts:
            parts = [f"{k}: {v}" for k, v in sorted(self.headers.items())]
        return "; ".join(parts) + f" (reported {_ago(now - self.at)})"


def limit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The usage-limit headers among `headers`, names in lower case."""
    return {
        k.lower(): v.strip() for k, v in headers.items() if k.lower().startswith(LIMIT_PREFIXES)
    }


def read_limits(headers: Mapping[str, str], upstream: str = "") -> UsageLimits | None:
    """The windows `headers` report (None: they report none); see the module docstring."""
    found = limit_headers(headers)
    if not found:
        return None
    windows: dict[str, LimitWindow] = {}
    notes: list[str] = []
    status = ""
    binding = ""

    def window(key: str, name: str) -> LimitWindow:
        return windows.setdefault(key, LimitWindow(name))

    for name, value in sorted(found.items()):
        if name.startswith(UNIFIED):
            rest = name[len(UNIFIED) :]
            if rest == "status":
                status = value
            elif rest == "representative-claim":
                binding = CLAIMS.get(value, value)
            elif m := _UNIFIED_WINDOW.match(rest):
                w = window(f"u:{m['w']}", WINDOW_NAMES.get(m["w"], m["w"].replace("_", " ")))
                if m["field"] == "utilization":
                    w.used_percent = _number(value, scale=100.0)
                elif m["field"] == "reset":
                    w.resets_at = _epoch(value)
                else:
                    w.status = value
        elif m := _CODEX_WINDOW.match(name):
            family = m["family"] or ""
            slot = m["slot"]
            w = window(f"c:{family}:{slot}", (f"{family} " if family else "") + slot)
            if m["field"] == "used-percent":
                w.used_percent = _number(value)
            elif m["field"] == "window-minutes":
                minutes = _number(value)
                if minutes:
                    w.name = (f"{family} " if family else "") + _duration_name(minutes)
            elif m["field"] == "reset-at":
                w.resets_at = _epoch(value)
            elif w.resets_at is None and (seconds := _number(value)) is not None:
                w.resets_at = time.time() + seconds
        elif name.startswith("x-codex-credits-"):
            what = name[len("x-codex-credits-") :]
            if what == "unlimited" and value.lower() in ("true", "1"):
                notes.append("credits unlimited")
            elif what == "balance" and value:
                notes.append(f"credits balance {value}")
        elif m := _ANTHROPIC_COUNTER.match(name) or _OPENAI_COUNTER.match(name):
            what = m["what"].replace("_", " ").replace("-", " ")
            w = window(f"n:{what}", what)
            if m["field"] == "limit":
                w.limit = value
            elif m["field"] == "remaining":
                w.remaining = value
            elif (at := _epoch(value)) is not None:
                w.resets_at = at
            else:
                w.resets_in = value
    if binding and (bound := windows.get(f"u:{binding}")) is not None:
        bound.binding = True
    return UsageLimits(upstream, list(windows.values()), status, notes, found)


def _number(value: str, scale: float = 1.0) -> float | None:
    try:
        return float(value) * scale
    except ValueError:
        return None


def _epoch(value: str) -> float | None:
    """Epoch seconds (or milliseconds) or an RFC 3339 time -> epoch seconds; None if neither."""
    number = _number(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _duration_name(minutes: float) -> str:
    if minutes % 1440 == 0:
        days = int(minutes // 1440)
        return "weekly" if days == 7 else f"{days}-day"
    if minutes % 60 == 0:
        return f"{int(minutes // 60)}-hour"
    return f"{minutes:g}-minute"


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _when(at: float, now: float) -> str:
    """``14:05 UTC (in 2h 3m)``, with the date when it is not today."""
    moment = datetime.fromtimestamp(at, UTC)
    today = datetime.fromtimestamp(now, UTC).date()
    shown = moment.strftime("%H:%M UTC" if moment.date() == today else "%b %d %H:%M UTC")
    if at <= now:
        return f"{shown} (passed; the next answer will say)"
    left = int(at - now)
    if left >= 86400:
        span = f"{left // 86400}d {left % 86400 // 3600}h"
    elif left >= 3600:
        span = f"{left // 3600}h {left % 3600 // 60}m"
    else:
        span = f"{left // 60}m"
    return f"{shown} (in {span})"
