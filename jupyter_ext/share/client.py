"""How a program other than the page follows a shared session (the tests, `make bench`): the
same three steps the page's script takes, with `requests`-free standard-library HTTP.

1. `exchange`: POST the link's code (JSON, with the server's own ``Origin``) for a grant.
2. `Grant.headers`: ``Authorization: Bearer <grant>`` (and the ``Origin``) for ``/api/*``.
3. `Grant.subprotocols`: the WebSocket subprotocols that carry the grant to ``/ws``.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from typing import Any

from jupyter_ext.share.server import WS_GRANT_PREFIX, WS_PROTOCOL


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a code was exchanged for, and how to present it."""

    url: str
    token: str
    session: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Origin": self.url,
            "Content-Type": "application/json",
        }

    @property
    def subprotocols(self) -> list[str]:
        return [WS_PROTOCOL, WS_GRANT_PREFIX + self.token]


class JoinError(RuntimeError):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"{status}: {body.get('result', body)}")
        self.status, self.body = status, body


def exchange(url: str, code: str, context: Any = None, origin: str = "") -> Grant:
    """Exchange `code` at the share server at `url` (scheme://host:port) for a grant, as its
    own page would (`origin`: pretend to be another page, for tests of the refusal)."""
    headers = {"Origin": origin or url, "Content-Type": "application/json"}
    request = urllib.request.Request(
        f"{url}/join", data=json.dumps({"code": code}).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise JoinError(exc.code, json.loads(exc.read() or b"{}")) from None
    return Grant(url, body["grant"], body["session"], body["role"])
