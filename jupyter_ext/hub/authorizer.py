"""The single-user server's Authorizer under JupyterHub: visitors see the share page only.

A JupyterHub share (``access:servers!server=alice/``) is what lets bob's browser through
alice's server's sign-in at all; with Jupyter Server's default Authorizer it would then let him
do everything alice can (open her notebooks, run code in her kernels, open a terminal). This one
allows the server's owner everything and anyone else exactly one resource, `SHARE_RESOURCE`,
which only the share page's handlers ask for (`jupyter_ext.hub.handlers`); those then check the
visitor's hub name and groups against the session's grants.

Outside JupyterHub (no ``JUPYTERHUB_USER``) a server has one user, its owner: everything is
allowed, as with Jupyter Server's default.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import User

#: The resource the share page's handlers are authorised for.
SHARE_RESOURCE = "omnikernel-share"


def server_owner() -> str | None:
    """The hub user who owns this single-user server, or None outside JupyterHub."""
    return os.environ.get("JUPYTERHUB_USER") or None


class SharedSessionAuthorizer(Authorizer):  # type: ignore[misc]
    """The owner may do anything; another hub user only what `SHARE_RESOURCE` names."""

    def is_authorized(self, handler: Any, user: User, action: str, resource: str) -> bool:
        owner = server_owner()
        if owner is None or user.username == owner:
            return True
        allowed = resource == SHARE_RESOURCE
        if not allowed:
            self.log.warning(
                "omnikernel: %s may not %s %s on %s's server (a shared session's visitor "
                "sees its share page only)",
                user.username,
                action,
                resource,
                owner,
            )
        return allowed
