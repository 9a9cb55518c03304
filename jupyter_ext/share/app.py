"""The share server as a jupyter-server extension: started in the server's own loop, stopped
with it. Configure with ``c.OmnikernelShare.port`` / ``ip`` / ``hostnames`` / ``certfile`` /
``keyfile`` / ``enabled``."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Int, List, Unicode

from jupyter_ext.share.server import ShareServer
from omnikernel.kernel.settings import SessionFiles


class OmnikernelShare(ExtensionApp):
    name = "omnikernel_share"
    load_other_extensions = True

    enabled = Bool(True, help="Serve share links (the %share magic's) from this server.").tag(
        config=True
    )
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

    async def _start_jupyter_server_extension(self, serverapp: object) -> None:
        """Start once the server's loop runs (jupyter_server's hook for that)."""
        if not self.enabled:
            return
        store = self.serverapp.web_app.settings.get("omnikernel_store")
        server = ShareServer(
            store.path if store else SessionFiles(parent=self).store,
            address=self.ip,
            port=self.port,
            hostnames=self.hostnames,
            certfile=self.certfile,
            keyfile=self.keyfile,
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
        if self.share is not None:
            await self.share.stop()
            self.share = None
