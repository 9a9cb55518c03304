"""An event as the share page shows it: HTML made on the server, agent text only through
`omnikernel.view.sanitize`, everything else escaped. The page never turns raw agent text into HTML.

Paths are shown as the notebook's user reads them, not as the owner's machine spells them:
`OwnerPaths` turns the notebook's folder into a relative path and the owner's home into ``~``
in every string of an event before it is rendered, so a viewer learns neither the owner's
user name nor the layout of their disk (the cell, which only the owner sees, keeps them)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from omnikernel.events import Event, EventKind
from omnikernel.view.sanitize import escape, preformatted, render_markdown


@dataclasses.dataclass(frozen=True)
class OwnerPaths:
    """The owner's notebook folder and home, as they appear in a session's events."""

    folder: str = ""
    home: str = ""

    @classmethod
    def of(cls, notebook: str, home: str | None = None) -> OwnerPaths:
        """From the session's notebook path (absolute when a kernel recorded it)."""
        home = home if home is not None else os.path.expanduser("~")
        folder = ""
        if notebook and os.path.isabs(notebook):
            path = Path(notebook)
            folder = str(path.parent if path.suffix == ".ipynb" else path)
        return cls(folder if folder != "/" else "", home if home not in ("", "/") else "")

    def _patterns(self) -> list[tuple[re.Pattern[str], str, str]]:
        # A path ends at "/" (more follows: keep it relative) or at a character no path name
        # holds here; "/home/u/proj" must not eat the start of "/home/u/project2".
        out = []
        for prefix, inner, bare in ((self.folder, "", "."), (self.home, "~/", "~")):
            if prefix:
                out.append((re.compile(re.escape(prefix) + r"(?:(/)|(?![\w.@+-]))"), inner, bare))
        return out

    def shorten(self, text: str) -> str:
        for pattern, inner, bare in self._patterns():
            text = pattern.sub(lambda m, i=inner, b=bare: i if m.group(1) else b, text)
        return text

    def shorten_data(self, value: Any) -> Any:
        """`value` (an event's data) with every string shortened, keys included."""
        if not (self.folder or self.home):
            return value
        if isinstance(value, str):
            return self.shorten(value)
        if isinstance(value, dict):
            return {self.shorten_data(k): self.shorten_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.shorten_data(v) for v in value]
        return value


def _command(data: dict[str, Any]) -> str:
    summary = data.get("summary") or data.get("command") or ""
    if not summary:
        summary = json.dumps(data.get("input", {}), default=str)[:2000]
    return str(summary)


def event_html(event: Event) -> str:
    data = event.data
    kind = event.kind
    if kind == EventKind.TEXT:
        return render_markdown(str(data.get("text", "")))
    if kind == EventKind.TURN_START:
        origin = f" (from {escape(str(data['by']))})" if data.get("by") else ""
        if data.get("by") and data.get("runs_as"):
            origin = (
                f" (from {escape(str(data['by']))}, run with "
                f"{escape(str(data['runs_as']))}'s credentials and budget)"
            )
        return f"<h3>Turn {event.turn}{origin}: {escape(str(data.get('prompt', ''))[:500])}</h3>"
    if kind == EventKind.TOOL_CALL:
        return (
            f"<div class='tool'><b>{escape(str(data.get('tool', 'tool')))}</b>"
            f"{preformatted(_command(data))}</div>"
        )
    if kind == EventKind.TOOL_RESULT:
        output = str(data.get("output", data.get("content", "")))[:4000]
        return f"<details><summary>output</summary>{preformatted(output)}</details>"
    if kind == EventKind.APPROVAL_REQUEST:
        return (
            f"<div class='ask'>Approval asked: <b>{escape(str(data.get('tool', '')))}</b>"
            f"{preformatted(_command(data))}</div>"
        )
    if kind == EventKind.APPROVAL_DECISION:
        return f"<div class='decided'>{escape(str(data.get('reason', data.get('decision'))))}</div>"
    if kind == EventKind.SPEND:
        cost = data.get("cost_usd")
        shown = f"${cost:.4f}" if isinstance(cost, int | float) else "unpriced"
        if data.get("rehearsal"):  # the offline rehearsal model: nothing was spent
            shown = f"{shown} (rehearsal)" if data.get("priced_as") else "$0 (rehearsal)"
        return f"<div class='spend'>{escape(str(data.get('model', '')))}: {shown}</div>"
    if kind in (EventKind.NOTICE, EventKind.ERROR):
        return f"<div class='{kind.value}'>{escape(str(data.get('message', data)))}</div>"
    if kind == EventKind.TURN_END:
        return "<hr>"
    return ""


def text_block_html(text: str) -> str:
    """A run of streamed text, rendered as one Markdown block, the way the cell shows it."""
    return render_markdown(text)


def event_message(event: Event, paths: OwnerPaths | None = None) -> dict[str, Any]:
    """What the page receives for one event: its seq and kind, safe HTML, and the few plain
    fields the page needs for the pending approval and the spend (set as text, not HTML)."""
    if paths is not None:
        event = dataclasses.replace(event, data=paths.shorten_data(event.data))
    data = event.data
    message: dict[str, Any] = {
        "seq": event.seq,
        "kind": event.kind.value,
        "turn": event.turn,
        "html": event_html(event),
    }
    if event.kind in (EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION):
        message["request_id"] = str(data.get("request_id", ""))
        message["tool"] = str(data.get("tool", ""))
        message["summary"] = _command(data) if event.kind == EventKind.APPROVAL_REQUEST else ""
        message["reason"] = str(data.get("reason", ""))
    if event.kind == EventKind.SPEND and isinstance(data.get("cost_usd"), int | float):
        message["cost_usd"] = data["cost_usd"]
    if event.kind == EventKind.SPEND and data.get("rehearsal"):
        message["rehearsal"] = True  # the page says the spend is a rehearsal's, not money
    return message
