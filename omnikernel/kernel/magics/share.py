"""`%share`: links to this session's live page, and answers from it reaching the waiting cell.

- ``%share``: a new read-only link and a new co-drive link (each also as a QR code), who is
  watching now, and the session feed, where co-drivers' prompts run (`omnikernel.kernel.codrive`).
  A link's code is shown only here, once; the store keeps a hash.
- ``%share feed``: the session feed again, without new links (after a restart, say).
- ``%share revoke [ro|rw|all]``: end those links now: their cookies and open pages with them.
- Under JupyterHub: ``%share with bob`` / ``%share with group:data-team`` (``--co-drive`` for
  the co-drive role; read-only otherwise) lets that hub user or group's members follow the
  session on its page under the owner's server, signed in with the hub; ``%share`` lists who
  has access and who is watching (``%share link`` still makes anonymous links, which the
  server opens only if ``c.OmnikernelShare.anonymous_links`` allows); ``%share revoke bob``
  ends bob's access now, his open page included (`omnikernel.kernel.hub`).

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

from omnikernel.kernel.hub import Hub, HubError
from omnikernel.store.shares import (
    CO_DRIVE,
    READ_ONLY,
    ROLE_NAMES,
    ROLES,
    ShareCodes,
    check_person,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from omnikernel.session.core import AgentSession

DEFAULT_URL = "http://127.0.0.1:6767"
USAGE = (
    "%share makes a read-only and a co-drive link and shows the session feed (under "
    "JupyterHub: lists who has access; %share link makes links); %share feed shows the feed "
    "only; %share revoke [ro|rw|all] ends links; %share with NAME|group:NAME [--co-drive] "
    "shares with hub users; %share revoke NAME ends their access."
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
        hub = Hub.from_env()
        if not words or words == ["link"]:
            if hub is None or words == ["link"]:
                self._links()
            else:
                self._access(hub)
            if self.show_feed is not None:
                self.show_feed()
            return None
        if words[0] == "with":
            return self._share_with(hub, words[1:])
        named = hub is not None or self.codes.people(self.session.session_id)
        if words[0] == "revoke" and len(words) == 2 and words[1] not in (*ROLES, "all") and named:
            return self._revoke_person(hub, words[1])
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

    def _share_with(self, hub: Hub | None, args: list[str]) -> None:
        role = CO_DRIVE if "--co-drive" in args else READ_ONLY
        people = [a for a in args if a != "--co-drive"]
        if unknown := [a for a in people if a.startswith("-")]:
            raise UsageError(f"%share with takes --co-drive, not {unknown[0]!r}. {USAGE}")
        if not people:
            raise UsageError(f"%share with needs a hub user or group:NAME. {USAGE}")
        if hub is None:
            raise UsageError(
                "Sharing with named people needs JupyterHub (it signs them in); outside a hub, "
                "`%share` makes links."
            )
        for person in people:
            try:
                check_person(person)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        session_id = self.session.session_id
        done: list[str] = []
        for person in people:
            if person == hub.owner:
                raise UsageError(f"{person} owns this server: they can always follow it.")
            try:
                hub.share_server(person)
            except HubError as exc:
                raise UsageError(f"Could not share with {person}: {exc}") from None
            self.codes.share_with(session_id, person, role)
            done.append(person)
        url = hub.page_url(session_id)
        text = (
            f"Shared session {session_id} with {', '.join(done)} ({ROLE_NAMES[role]}: "
            f"{RIGHTS[role]}). They open {url} and sign in with the hub; "
            f"`%share revoke {done[0]}` ends it."
        )
        display(
            {
                "text/plain": text,
                "text/html": f"<p>{html.escape(text)}</p><p><a href='{html.escape(url, True)}' "
                f"target='_blank'>{html.escape(url)}</a></p>",
            },
            raw=True,
        )

    def _revoke_person(self, hub: Hub | None, person: str) -> None:
        try:
            check_person(person)
        except ValueError as exc:
            raise UsageError(f"{exc}. {USAGE}") from None
        n = self.codes.revoke_person(self.session.session_id, person)
        if not n:
            raise UsageError(
                f"Session {self.session.session_id} is not shared with {person} (%share "
                "revoke takes ro, rw, all or a name it was shared with)."
            )
        notes = [f"{person} no longer has access to session {self.session.session_id}; open "
                 "pages close now."]  # fmt: skip
        if hub is not None and not self.codes.shared_anywhere(person):
            try:
                hub.unshare_server(person)
            except HubError as exc:  # the page refuses them anyway: the store is the gate
                notes.append(f"(The hub share of this server stays: {exc})")
        display({"text/plain": " ".join(notes)}, raw=True)

    def _access(self, hub: Hub) -> None:
        """Who has access to this session and who is watching (under JupyterHub)."""
        session_id = self.session.session_id
        people = self.codes.people(session_id)
        lines = [f"Session page: {hub.page_url(session_id)}"]
        if people:
            lines.append(
                "Shared with: " + ", ".join(f"{c.person} ({ROLE_NAMES[c.role]})" for c in people)
            )
        else:
            lines.append(
                "Not shared with anyone yet: `%share with NAME [--co-drive]` or "
                "`%share with group:NAME`."
            )
        lines.append(self._watching(session_id))
        display({"text/plain": "\n".join(lines)}, raw=True)

    def _watching(self, session_id: str) -> str:
        watchers = self.codes.watchers(session_id)
        if not watchers:
            return "Nobody is watching yet."
        return "Watching now: " + "; ".join(
            f"{w['who']} since {datetime.datetime.fromtimestamp(w['since']):%H:%M}"
            for w in watchers
        )

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
        if people := self.codes.people(session_id):
            notes.append(
                "Shared with: " + ", ".join(f"{c.person} ({ROLE_NAMES[c.role]})" for c in people)
            )
        notes.append(self._watching(session_id))
        display(
            {
                "text/plain": "\n".join(plain + notes),
                "text/html": "".join(parts) + "".join(f"<p>{html.escape(n)}</p>" for n in notes),
            },
            raw=True,
        )
