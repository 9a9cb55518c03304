"""Who may use the kernel's local services: the agent holding its session's secret, no one else.

The model gateway adds the user's real API key to what it forwards, so a request it accepts
spends the user's money. Sandboxed agents reach it through a unix socket only the user can open
(`omnikernel.gateway.server`), but a port on 127.0.0.1 (the gateway's own once an agent runs
with ``%sandbox off``, the offline rehearsal model's) is reachable by every local process,
every other user of a shared machine and every web page open in the user's browser (a page can
find the port by scanning, or reach it under its own name by DNS rebinding). So every service
the kernel starts that forwards or acts (the gateway, the offline rehearsal model) refuses,
before anything else, whichever way the request came:

- a request with an ``Origin`` header: browsers send it on every cross-origin POST, agents never;
- a ``Host`` other than the exact ``127.0.0.1:PORT`` values it serves (what the agent sends: the
  relay's port inside its sandbox, or the service's own TCP port): a rebound DNS name arrives
  with the attacker's host name;
- a POST whose content type is not JSON: the only bodies a page may send without a CORS
  preflight are ``text/plain``, form and multipart;

and then accepts only the secret issued for that path, in the header the wire format uses
(``x-api-key``, ``x-goog-api-key`` or ``Authorization: Bearer``; never a ``?key=`` query
parameter, which ends up in logs), compared in constant time. A secret is random
(256 bits from `secrets`), issued per harness per session, lives only in the kernel's memory and
the agent's environment, and is never logged, stored or shown. Everything refused gets 401.

The checks are pure functions of the request's method and headers, so they are tested as tables.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

#: Recognisable in an environment dump, and long enough that guessing is hopeless (256 bits).
SECRET_PREFIX = "omk-"
JSON_TYPES = ("application/json",)


def new_secret() -> str:
    """A fresh random secret for one harness of one session."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, in any case (tornado's headers are case-insensitive; dicts are not)."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def presented_secret(headers: Mapping[str, str]) -> str:
    """The credential a client sent: ``x-api-key`` (Anthropic), ``x-goog-api-key`` (Gemini),
    else ``Authorization: Bearer``."""
    for name in ("x-api-key", "x-goog-api-key"):
        if key := _header(headers, name):
            return key.strip()
    scheme, _, token = (_header(headers, "authorization") or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def secret_matches(presented: str, expected: str | None) -> bool:
    """Constant-time comparison; nothing matches a secret never issued."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in JSON_TYPES


def browser_refusal(
    method: str, headers: Mapping[str, str], hosts: str | tuple[str, ...]
) -> str | None:
    """Why a request cannot be an agent's (a browser's, a rebound name's), or None.

    `hosts` is the exact ``127.0.0.1:PORT`` (or each of them) an agent reaches the service at.
    Attacker-chosen values appear in the reason only shortened and quoted; no credential ever
    does."""
    hosts = (hosts,) if isinstance(hosts, str) else hosts  # never a substring test
    if _header(headers, "origin") is not None:
        return "it comes from a web page (it has an Origin header)"
    sent_host = _header(headers, "host")
    if sent_host not in hosts:
        served = " or ".join(hosts)
        return f"its Host {_shown(sent_host)} is not {served} (a DNS-rebinding attempt?)"
    if method.upper() == "POST" and not is_json(_header(headers, "content-type")):
        return f"its content type {_shown(_header(headers, 'content-type'))} is not JSON"
    return None


def refusal(
    method: str,
    headers: Mapping[str, str],
    hosts: str | tuple[str, ...],
    expected_secret: str | None,
    what: str,
) -> str | None:
    """Why a request to `what` (e.g. "harness claude") is refused, or None to serve it."""
    if reason := browser_refusal(method, headers, hosts):
        return reason
    presented = presented_secret(headers)
    if not presented:
        return f"it has no secret for {what}"
    if not secret_matches(presented, expected_secret):
        return f"its secret is not the one issued for {what}"
    return None


def _shown(value: str | None) -> str:
    return "(none)" if value is None else repr(value[:60])
