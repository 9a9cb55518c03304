"""The kernel's view of JupyterHub: who owns this server, and the hub shares `%share with` makes.

A kernel under JupyterHub inherits its single-user server's environment: ``JUPYTERHUB_USER``
(the owner), ``JUPYTERHUB_SERVER_NAME``, ``JUPYTERHUB_API_URL`` and the server's own API token
``JUPYTERHUB_API_TOKEN``. With the ``shares!user`` scope on that token (the hub's ``server``
role; docs/hub.md) the kernel creates a JupyterHub share of the owner's server for whoever
``%share with`` names, which is what lets their browser through the server's sign-in at all;
the share page then checks the session's own grants. The token is read from the environment
when a call is made and never stored, shown or logged.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import urllib.error
import urllib.parse
from typing import Any

from omnikernel.store.shares import GROUP_PREFIX


def current_user() -> str:
    """Who the notebook's owner is, as decisions and prompts record it: the hub user who owns
    this server under JupyterHub (every user's server may run as the same Unix user there),
    else the Unix user."""
    if hub_user := os.environ.get("JUPYTERHUB_USER"):
        return hub_user
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "user"


class HubError(RuntimeError):
    """The hub refused or could not be reached; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Hub:
    api_url: str
    owner: str
    server_name: str
    service_prefix: str
    public_url: str

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Hub | None:
        """The hub this kernel's server belongs to, or None outside JupyterHub."""
        env = dict(os.environ if env is None else env)
        owner = env.get("JUPYTERHUB_USER", "")
        api_url = env.get("JUPYTERHUB_API_URL", "")
        if not owner or not api_url:
            return None
        return cls(
            api_url=api_url.rstrip("/"),
            owner=owner,
            server_name=env.get("JUPYTERHUB_SERVER_NAME", ""),
            service_prefix=env.get("JUPYTERHUB_SERVICE_PREFIX", f"/user/{owner}/"),
            public_url=env.get("JUPYTERHUB_PUBLIC_URL", "").rstrip("/"),
        )

    def page_url(self, session_id: str) -> str:
        """The share page of `session_id` under this server (absolute when the hub says its
        public URL, else a path that works from the same browser)."""
        query = urllib.parse.urlencode({"session": session_id})
        return f"{self.public_url}{self.service_prefix}omnikernel/share/live?{query}"

    def _call(self, method: str, path: str, body: dict[str, Any]) -> Any:
        import urllib.request  # here, not at the kernel's start: http.client and email, ~5 ms

        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not token:
            raise HubError("this server has no JUPYTERHUB_API_TOKEN: start it from the hub")
        request = urllib.request.Request(
            self.api_url + path, data=json.dumps(body).encode(), method=method
        )
        request.add_header("Authorization", f"token {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            hint = (
                " (the hub's `server` role needs the scopes shares!user, read:users:name and "
                "read:groups:name: docs/hub.md)"
                if exc.code == 403
                else ""
            )
            raise HubError(f"the hub answered {exc.code}: {detail}{hint}") from None
        except OSError as exc:
            raise HubError(f"the hub at {self.api_url} did not answer: {exc}") from None
        return json.loads(text) if text else None

    @staticmethod
    def _whom(person: str) -> dict[str, str]:
        if person.startswith(GROUP_PREFIX):
            return {"group": person.removeprefix(GROUP_PREFIX)}
        return {"user": person}

    def share_server(self, person: str) -> None:
        """Let `person` (``bob``, ``group:data-team``) through this server's sign-in: a
        JupyterHub share (``access:servers`` on this server only)."""
        path = f"/shares/{urllib.parse.quote(self.owner)}/{urllib.parse.quote(self.server_name)}"
        self._call("POST", path, self._whom(person))

    def unshare_server(self, person: str) -> None:
        """Withdraw the JupyterHub share of this server from `person`."""
        path = f"/shares/{urllib.parse.quote(self.owner)}/{urllib.parse.quote(self.server_name)}"
        self._call("PATCH", path, self._whom(person))
