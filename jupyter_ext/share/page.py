"""The share server's pages: HTML shells, with their script and style in files beside them
(`static/`), so the Content-Security-Policy allows no inline script at all.

The live page puts the pending approval and the spend at the top, in one column sized for a
phone. Event HTML comes from the server, made by `render` (agent text through
`omnikernel.view.sanitize`); everything else the script shows is set as text. Neither shell holds
a code, a grant or anything of a session: the join page's script reads the code from its own
address, and the live page's script brings its grant from the origin's storage."""

from __future__ import annotations

import html
from pathlib import Path

_HERE = Path(__file__).parent / "static"

#: Served under /static/: name -> (content type, text).
STATIC = {
    "share.css": ("text/css; charset=utf-8", (_HERE / "share.css").read_text()),
    "join.js": ("text/javascript; charset=utf-8", (_HERE / "join.js").read_text()),
    "live.js": ("text/javascript; charset=utf-8", (_HERE / "live.js").read_text()),
}

_HEAD = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/share.css">"""

CONFIRM_PAGE = (
    _HEAD.format(title="Join an omnikernel session")
    + """<script src="/static/join.js" defer></script></head>
<body class="join">
<h1>Join a live agent session?</h1>
<p>This {{role}} link lets you follow an omnikernel agent session. Opening it keeps a key in
this browser, for this server only; the link's owner can revoke it at any time.</p>
<button type="button" id="join">Open the session</button>
<p id="said" role="status"></p>
</body></html>
"""
)

UNUSABLE_PAGE = (
    _HEAD.format(title="omnikernel share link")
    + """</head>
<body class="join"><h1>This link cannot be opened</h1><p id="why">{{why}}</p></body></html>
"""
)

_LIVE_PAGE = (
    _HEAD.format(title="omnikernel live session")
    + """<script src="/static/live.js" defer></script></head>
<body data-base="{{base}}" data-mode="{{mode}}" data-xsrf="{{xsrf}}">
<header><div id="status">connecting…</div>
<div>Spend: <span id="spend">$0.0000</span> · <span id="rolename"></span>
<span id="notebook"></span></div>
<div id="pending"></div><div id="said"></div></header>
<main id="feed"></main>
<form id="ask"><label for="prompt">Prompt the agent (runs as a turn of the notebook's session)</label>
<div class="row"><textarea id="prompt" rows="2" maxlength="20000" placeholder="What should the agent do next?"></textarea>
<button type="submit" id="send">Send</button></div><div id="asked"></div></form>
</body></html>
"""
)


def live_page(base: str = "/", mode: str = "link", xsrf: str = "") -> str:
    """The live page's shell. `base` is where the share routes live (``/`` on the standalone
    server, ``/user/alice/omnikernel/share/`` under JupyterHub); `mode` says what the script
    authenticates with: ``link`` (its grant from the origin's storage) or ``hub`` (the hub
    sign-in's cookie, with `xsrf` as the token its POSTs carry)."""
    page = _LIVE_PAGE.replace('"/static/', '"' + html.escape(base, quote=True) + "static/")
    for key, value in (("base", base), ("mode", mode), ("xsrf", xsrf)):
        page = page.replace("{{" + key + "}}", html.escape(value, quote=True))
    return page


LIVE_PAGE = live_page()
