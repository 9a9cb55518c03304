"""`%share`: links to this session's live page, and answers from it reaching the waiting cell.

- ``%share``: a new read-only link and a new co-drive link (each also as a QR code), who is
  watching now, and the session feed, where co-drivers' prompts run (`omnikernel.kernel.codrive`).
  A link's code is shown only here, once; the store keeps a hash.
- ``%share feed``: the session feed again, without new links (after a restart, say).
- ``%share revoke [ro|rw|all]``: end those links now: their cookies and open pages with them.

The share server (the jupyter-server extension, or ``python -m jupyter_ext.share``) is another
process, so the two meet in the session store (`omnikernel.store.shares`): the magic writes
hashed codes there; the server writes answers given on the page there, and
`omnikernel.approvals.from_share` takes them while an ask waits, answering it like the card
would.
"""

from __future__ import annotations

import datetime
import html
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from omnikernel.store.shares import CO_DRIVE, READ_ONLY, ROLE_NAMES, ROLES, ShareCodes

if TYPE_CHECKING:
    from collections.abc import Callable

    from omnikernel.session.core import AgentSession

DEFAULT_URL = "http://127.0.0.1:6767"
USAGE = (
    "%share makes a read-only and a co-drive link and shows the session feed; %share feed "
    "shows the feed only; %share revoke [ro|rw|all] ends links."
)
RIGHTS = {READ_ONLY: "follows the session live; can do nothing else",
          CO_DRIVE: "follows it, approves or denies what the agent asks, and sends prompts"}  # fmt: skip


@magics_class
class ShareMagics(Magics):
    def __init__(
        self, shell: Any, session: AgentSession, show_feed: Callable[[], None] | None = None
    ):
        super().__init__(shell)
        self.session = session
        self._codes: ShareCodes | None = None
        #: Shows the session feed in this cell and starts taking co-drivers' prompts.
        self.show_feed = show_feed

    @property
    def codes(self) -> ShareCodes:
        if self._codes is None or self._codes.path != self.session.store.path:
            self._codes = ShareCodes(self.session.store.path)
        return self._codes

    @line_magic("share")
    def share(self, line: str) -> None:
        """%share [revoke [ro|rw|all]]: share this session's live page by link."""
        words = line.split()
        if not words:
            self._links()
            if self.show_feed is not None:
                self.show_feed()
            return None
        if words == ["feed"]:
            if self.show_feed is None:
                raise UsageError("This kernel cannot show a session feed.")
            self.show_feed()
            return None
        if words[0] == "revoke" and len(words) <= 2:
            which = words[1] if len(words) == 2 else "all"
            if which not in (*ROLES, "all"):
                raise UsageError(f"%share revoke takes ro, rw or all, not {which!r}. {USAGE}")
            roles = ROLES if which == "all" else (which,)
            n = self.codes.revoke(self.session.session_id, roles)
            names = " and ".join(ROLE_NAMES[r] for r in roles)
            text = (
                f"Revoked {n} {names} link(s) of session {self.session.session_id}; open "
                "pages are closed now."
            )
            display({"text/plain": text}, raw=True)
            return None
        raise UsageError(f"%share does not take {line.strip()!r}. {USAGE}")

    def _links(self) -> None:
        import segno  # loaded when a code is shown, not while the kernel starts

        session_id = self.session.session_id
        base = self.codes.server_url()
        plain: list[str] = []
        parts: list[str] = []
        for role in (READ_ONLY, CO_DRIVE):
            code = self.codes.new_code(session_id, role)
            # A code pasted into a prompt would reach every viewer: the store redacts it.
            self.session.redactor.add(code, f"{ROLE_NAMES[role]} share code")
            url = f"{base or DEFAULT_URL}/join?code={code}"
            qr = segno.make(url, error="m")
            plain.append(f"{ROLE_NAMES[role]} ({RIGHTS[role]}):\n  {url}")
            parts.append(
                f"<div style='display:inline-block;margin:0 24px 12px 0;vertical-align:top'>"
                f"<b>{ROLE_NAMES[role]}</b><br><small>{html.escape(RIGHTS[role])}</small><br>"
                f"<img alt='QR code of the {ROLE_NAMES[role]} link' "
                f"src='{qr.svg_data_uri(scale=4)}'><br>"
                f"<a href='{html.escape(url, quote=True)}' target='_blank'>"
                f"{html.escape(url)}</a></div>"
            )
        notes = ["Links expire in 24 hours; `%share revoke` ends them now."]
        if base is None:
            notes.append(
                "No share server is running for this store: start JupyterServer with "
                "the omnikernel extension, or `python -m jupyter_ext.share`."
            )
        watchers = self.codes.watchers(session_id)
        if watchers:
            notes.append(
                "Watching now: "
                + "; ".join(
                    f"{w['who']} since {datetime.datetime.fromtimestamp(w['since']):%H:%M}"
                    for w in watchers
                )
            )
        else:
            notes.append("Nobody is watching yet.")
        display(
            {
                "text/plain": "\n".join(plain + notes),
                "text/html": "".join(parts) + "".join(f"<p>{html.escape(n)}</p>" for n in notes),
            },
            raw=True,
        )
