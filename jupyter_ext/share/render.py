"""An event as the share page shows it: HTML made on the server, agent text only through
`omnikernel.sanitize`, everything else escaped. The page never turns raw agent text into HTML."""

from __future__ import annotations

import json
from typing import Any

from omnikernel.events import Event, EventKind
from omnikernel.sanitize import escape, preformatted, render_markdown


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
        return f"<h3>Turn {event.turn}{origin}: {escape(str(data.get('prompt', ''))[:500])}</h3>"
    if kind == EventKind.TOOL_CALL:
        return (f"<div class='tool'><b>{escape(str(data.get('tool', 'tool')))}</b>"
                f"{preformatted(_command(data))}</div>")  # fmt: skip
    if kind == EventKind.TOOL_RESULT:
        output = str(data.get("output", data.get("content", "")))[:4000]
        return f"<details><summary>output</summary>{preformatted(output)}</details>"
    if kind == EventKind.APPROVAL_REQUEST:
        return (f"<div class='ask'>Approval asked: <b>{escape(str(data.get('tool', '')))}</b>"
                f"{preformatted(_command(data))}</div>")  # fmt: skip
    if kind == EventKind.APPROVAL_DECISION:
        return f"<div class='decided'>{escape(str(data.get('reason', data.get('decision'))))}</div>"
    if kind == EventKind.SPEND:
        cost = data.get("cost_usd")
        shown = f"${cost:.4f}" if isinstance(cost, int | float) else "unpriced"
        return f"<div class='spend'>{escape(str(data.get('model', '')))}: {shown}</div>"
    if kind in (EventKind.NOTICE, EventKind.ERROR):
        return f"<div class='{kind.value}'>{escape(str(data.get('message', data)))}</div>"
    if kind == EventKind.TURN_END:
        return "<hr>"
    return ""


def event_message(event: Event) -> dict[str, Any]:
    """What the page receives for one event: its seq and kind, safe HTML, and the few plain
    fields the page needs for the pending approval and the spend (set as text, not HTML)."""
    data = event.data
    message: dict[str, Any] = {"seq": event.seq, "kind": event.kind.value, "turn": event.turn,
                               "html": event_html(event)}  # fmt: skip
    if event.kind in (EventKind.APPROVAL_REQUEST, EventKind.APPROVAL_DECISION):
        message["request_id"] = str(data.get("request_id", ""))
        message["tool"] = str(data.get("tool", ""))
        message["summary"] = _command(data) if event.kind == EventKind.APPROVAL_REQUEST else ""
        message["reason"] = str(data.get("reason", ""))
    if event.kind == EventKind.SPEND and isinstance(data.get("cost_usd"), int | float):
        message["cost_usd"] = data["cost_usd"]
    return message
