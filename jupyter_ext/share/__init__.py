"""Sharing a live session by URL: the share server (port 6767), its codes and its page.

See `server` for the rules, `codes` for what the kernel and the server share through the
store, `app` for the jupyter-server extension and ``python -m jupyter_ext.share`` for running
it on its own."""
