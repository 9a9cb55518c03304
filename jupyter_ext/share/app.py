"""The share server as a jupyter-server extension: started in the server's own loop, stopped
with it. Configure with ``c.OmnikernelShare.port`` / ``ip`` / ``hostnames`` / ``certfile`` /
``keyfile`` / ``enabled`` / ``approvers`` / ``anonymous_links``.

Under JupyterHub (``JUPYTERHUB_USER`` set) the share page is served under the user's own
server instead (`jupyter_ext.hub.handlers`), to the hub users a session is shared with by name;
the share server on port 6767 (unreachable there) is off unless enabled on purpose."""

from __future__ import annotations

import os

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Int, List, Unicode, default

from jupyter_ext.share.server import APPROVERS, ShareServer
from omnikernel.kernel.settings import SessionFiles


def under_hub() -> bool:
    return bool(os.environ.get("JUPYTERHUB_USER"))


class OmnikernelShare(ExtensionApp):
    name = "omnikernel_share"
    load_other_extensions = True

    enabled = Bool(
        True,
        help="Run the share server on `port` for the %share magic's links (default: on, "
        "but off under JupyterHub, where the share page is served under the user's server).",
    ).tag(config=True)

    @default("enabled")
    def _enabled_default(self) -> bool:
        return not under_hub()

    approvers = Enum(
        APPROVERS,
        default_value="co-drivers",
        help="Who may answer the agent's approvals: `owner` (in the notebook only) or "
        "`co-drivers` (also whoever a co-drive link or `%share with NAME --co-drive` lets in).",
    ).tag(config=True)
    anonymous_links = Bool(
        True,
        help="Let the share server open share links for whoever holds one (no sign-in). "
        "Default: on for the standalone server, off under JupyterHub, where sessions are "
        "shared with named hub users (`%share with bob`).",
    ).tag(config=True)

    @default("anonymous_links")
    def _anonymous_links_default(self) -> bool:
        return not under_hub()

    port = Int(6767, help="Port of the share server (0: any free port).").tag(config=True)
    ip = Unicode(
        "127.0.0.1",
        help="Address the share server listens on. Loopback by default; a LAN address lets "
        "phones on that network open links (set certfile too, so nobody can read it on the "
        "wire).",
    ).tag(config=True)
    hostnames = List(
        Unicode(), help="Extra names the share server answers to (its Host check)."
    ).tag(config=True)
    certfile = Unicode("", help="TLS certificate (PEM): serve https.").tag(config=True)
    keyfile = Unicode("", help="TLS key (PEM) of certfile.").tag(config=True)

    share: ShareServer | None = None
    hub_share: ShareServer | None = None

    def store_path(self) -> object:
        store = self.serverapp.web_app.settings.get("omnikernel_store")
        return store.path if store else SessionFiles(parent=self).store

    def initialize_handlers(self) -> None:
        """Under JupyterHub: the share page under this server's base URL."""
        from jupyter_ext.hub.handlers import setup_hub_share

        self.hub_share = setup_hub_share(self.serverapp, self.store_path(), self.approvers)
        if self.hub_share is not None:
            self.log.info(
                "omnikernel: share page for named hub users at %somnikernel/share/live",
                self.serverapp.base_url,
            )

    async def _start_jupyter_server_extension(self, serverapp: object) -> None:
        """Start once the server's loop runs (jupyter_server's hook for that)."""
        if self.hub_share is not None:
            self.hub_share.start_ticking()
        if not self.enabled:
            return
        server = ShareServer(
            self.store_path(),  # type: ignore[arg-type]
            address=self.ip,
            port=self.port,
            hostnames=self.hostnames,
            certfile=self.certfile,
            keyfile=self.keyfile,
            approvers=self.approvers,
            anonymous_links=self.anonymous_links,
        )
        try:
            server.start()
        except OSError as exc:
            self.log.warning(
                "omnikernel: the share server could not listen on %s:%s (%s); "
                "%%share links use whichever share server runs there",
                self.ip,
                self.port,
                exc,
            )
            return
        self.share = server
        self.log.info("omnikernel: share server at %s", server.url)

    async def stop_extension(self) -> None:
        if self.hub_share is not None:
            await self.hub_share.stop()
            self.hub_share = None
        if self.share is not None:
            await self.share.stop()
            self.share = None
