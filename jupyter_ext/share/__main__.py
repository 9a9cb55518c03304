"""``python -m jupyter_ext.share``: the share server without a jupyter server (for kernels run
by nbclient or ``jupyter console``), serving the same store."""

from __future__ import annotations

import argparse
import asyncio
import logging

from jupyter_ext.share.server import ShareServer, serve_forever
from omnikernel.kernel.settings import SessionFiles


def main(argv: list[str] | None = None) -> None:
    """Serve the share page on port 6767 from the store (no jupyter server)."""
    parser = argparse.ArgumentParser(prog="python -m jupyter_ext.share", description=__doc__)
    parser.add_argument("--port", type=int, default=6767)
    parser.add_argument("--ip", default="127.0.0.1", help="a LAN address only on purpose")
    parser.add_argument("--hostname", action="append", default=[], help="extra Host name")
    parser.add_argument(
        "--store",
        default=None,
        help="session store (default: $OMNIKERNEL_STORE, else Jupyter's data dir)",
    )
    parser.add_argument("--certfile", default="")
    parser.add_argument("--keyfile", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = ShareServer(
        args.store or SessionFiles().store,
        address=args.ip,
        port=args.port,
        hostnames=args.hostname,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    print(f"omnikernel share server on {server.scheme}://{args.ip}:{args.port}", flush=True)
    try:
        asyncio.run(serve_forever(server))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
