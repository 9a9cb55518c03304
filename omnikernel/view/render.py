"""How events look in a notebook cell.

Pure functions turn events into MIME bundles (HTML for JupyterLab and exports, plain text for
consoles, nbclient and logs); `CellView` sends them to the cell that is running, streaming the
agent's text into one display that is updated in place (throttled, so a fast stream does not
flood the front end with messages). A front end that cannot update a display in place
(`jupyter console` ignores ``update_display_data`` and would show only the first words) gets
the text as ``stream`` output instead, and the rich displays for the rest. Given a timer
(``schedule``, the kernel's event loop), both are coalesced: a text delta is shown at most
`TEXT_UPDATE_INTERVAL` (display) or `STREAM_WRITE_INTERVAL` (stream) after it arrived, in one
message with the deltas around it, so a stream of thousands of deltas a second costs a few
messages; what the cell finally shows is the same text.

Everything here holds agent-controlled text, so no bundle carries the agent's Markdown or HTML
for the browser to interpret: the Markdown built here (agent text as answers, inline code or
fenced blocks) becomes HTML through `sanitize`, which fetches nothing the agent names.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from typing import Any

from omnikernel.events import Event, EventKind
from omnikernel.view.sanitize import (
    SessionImages,
    agent_bundle,
    escape,
    preformatted,
    render_markdown,
    wrap,
)

Bundle = dict[str, str]

#: How many lines of a tool's output or a written file a cell shows.
PREVIEW_LINES = 20
#: Minimum seconds between two updates of the streaming text display.
TEXT_UPDATE_INTERVAL = 0.1
#: Minimum seconds between two ``stream`` writes of text (given a timer to write the rest).
STREAM_WRITE_INTERVAL = 0.05
#: The most of a stream's time its display updates may take: each renders the whole text
#: (Markdown, sanitised), which for a long answer takes long (0.5 s for 180 kB of Markdown),
#: so the interval grows with the last render's cost. The last update shows the whole text.
RENDER_SHARE = 0.2


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Agent text without control characters (escape sequences could retitle, recolour or
    rewrite a terminal, or set its clipboard), keeping newlines and tabs."""
    return _CONTROL.sub("", text)


def fence(body: str, lang: str = "") -> str:
    """A fenced code block that survives backticks in `body`."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{body.rstrip()}\n{ticks}"


def inline(code: str) -> str:
    code = code.replace("\n", " ⏎ ")
    if len(code) > 160:
        code = code[:157] + "..."
    ticks = "``" if "`" in code else "`"
    return f"{ticks}{code}{ticks}" if ticks == "`" else f"{ticks} {code} {ticks}"


def preview(text: str, lines: int = PREVIEW_LINES) -> str:
    rows = text.rstrip("\n").splitlines()
    if len(rows) <= lines:
        return "\n".join(rows)
    return "\n".join(rows[:lines] + [f"... ({len(rows) - lines} more lines)"])


def edit_diff(call: dict[str, Any], max_lines: int = 60) -> str:
    """The unified diff of an edit tool call, whichever harness made it ("" if none)."""
    data = call.get("input") or {}
    path = str(call.get("summary") or "file")
    old, new = (
        data.get("old_string", data.get("oldText")),
        data.get("new_string", data.get("newText")),
    )
    if isinstance(old, str):
        lines = difflib.unified_diff(
            old.splitlines(), str(new or "").splitlines(), path, path, lineterm=""
        )
        return "\n".join(list(lines)[:max_lines])
    if isinstance(data.get("changes"), list):  # Codex file changes carry unified diffs
        diffs = (str(c.get("diff", "")) for c in data["changes"] if isinstance(c, dict))
        return "\n".join("\n".join(d.splitlines()[:max_lines]) for d in diffs if d)
    return ""


def tool_call_bundle(data: dict[str, Any]) -> Bundle:
    tool, action, summary = data.get("tool", "?"), data.get("action", "other"), data.get("summary")
    tool_input = data.get("input") or {}
    plain = f"▶ {tool}: {summary}"
    md = f"**▶ {tool}** {inline(summary)}" if summary else f"**▶ {tool}**"
    if action == "exec" and "\n" in (summary or ""):
        md = f"**▶ {tool}**\n\n{fence(str(summary), 'bash')}"
    elif action == "write" and isinstance(tool_input.get("content"), str):
        content = tool_input["content"]
        n = len(content.splitlines())
        md += f" (writes {n} line{'s' * (n != 1)})\n\n{fence(preview(content))}"
    elif action == "edit" and (diff := edit_diff(data)):
        md += f"\n\n{fence(preview(diff, 40), 'diff')}"
        plain += "\n" + diff
    return agent_bundle(md, plain)


def tool_result_bundle(data: dict[str, Any]) -> Bundle:
    output = str(data.get("output", ""))
    mark = "✗ error" if data.get("is_error") else "✓ result"
    if not output.strip():
        return agent_bundle(f"{mark} *(no output)*", f"  {mark} (no output)")
    shown = preview(output)
    return agent_bundle(f"{mark}\n\n{fence(shown)}", f"  {mark}:\n{shown}")


def approval_bundle(request: dict[str, Any], decision: dict[str, Any]) -> Bundle:
    what = f"{request.get('tool', '?')} {inline(request.get('summary', ''))}".strip()
    allowed = decision.get("decision") == "allow"
    by = decision.get("by", "")
    reason = decision.get("reason", "")
    if allowed:
        by_person = decision.get("source", "policy") != "policy"
        how = reason if by == "auto-approve" or by_person else f"allowed ({by}: {reason})"
        md = f"✓ **Approval** {what}: **{how}**"
        return agent_bundle(md, f"approval: {what}: {how}")
    return agent_bundle(
        f"✗ **Approval** {what}: **denied**\n\n> {reason}", f"approval: {what}: DENIED — {reason}"
    )


def notice_bundle(data: dict[str, Any]) -> Bundle:
    message, details = data.get("message", ""), data.get("details", "")
    body = render_markdown(f"> ℹ {message}")
    if details:
        body += wrap(
            f"<details><summary>What was handed over</summary>{preformatted(details)}</details>"
        )
    return {"text/plain": f"[omnigent] {message}", "text/html": body}


def error_bundle(data: dict[str, Any]) -> Bundle:
    message, hint = data.get("message", ""), data.get("hint", "")
    plain = f"Error: {message}" + (f"\n{hint}" if hint else "")
    md = f"✗ **Error:** {message}" + (f"\n\n{hint}" if hint else "")
    return agent_bundle(md, plain)


def spend_text(spends: list[dict[str, Any]], reported: Any) -> str:
    """The cell's cost: metered by the gateway when it saw the calls, else as reported. The
    offline rehearsal model's calls spend nothing: "$0 (rehearsal)", never a model's price."""
    if spends and all(s.get("rehearsal") for s in spends):
        priced_as = next((s["priced_as"] for s in spends if s.get("priced_as")), "")
        if not priced_as:
            return "$0 (rehearsal)"
        cost = sum(s.get("cost_usd") or 0.0 for s in spends)
        return f"${cost:.4f} (rehearsal priced as {priced_as})"
    if not spends:
        return f"${reported:.4f}" if isinstance(reported, int | float) else "cost unknown"
    priced = [s["cost_usd"] for s in spends if s.get("cost_usd") is not None]
    unpriced = {s.get("model", "?") for s in spends if s.get("cost_usd") is None}
    text = f"${sum(priced):.4f}" if priced or not unpriced else ""
    if spends and all(s.get("plan") for s in spends):
        # On a plan nothing is charged per call: show the API price only as a comparison.
        text = "plan" + (f" (API-equivalent {text})" if text else "")
    if unpriced:
        text += (" + " if text else "") + f"unpriced ({', '.join(sorted(unpriced))}"
        if isinstance(reported, int | float):
            text += f"; the agent reports ${reported:.4f}"
        text += ")"
    if any(s.get("estimated") for s in spends):
        text += " (estimated)"
    return text


def footer_bundle(
    harness: str,
    usage: dict[str, Any] | None,
    end: dict[str, Any],
    offline: bool,
    spends: list[dict[str, Any]] | None = None,
) -> Bundle:
    """The one-line summary every agent cell ends with."""
    parts = [harness]
    usage = usage or {}
    model = usage.get("model") or next((x.get("model") for x in spends or [] if x.get("model")), "")
    if model:
        parts.append(model)
    if usage.get("num_turns"):
        n = usage["num_turns"]
        parts.append(f"{n} turn{'s' * (n != 1)}")
    # The gateway's meter is the source of truth; the harness's own count is the fallback.
    counted = spends or ([usage] if usage else [])
    if counted:
        tokens_in = sum(x.get("input_tokens", 0) for x in counted)
        tokens_out = sum(x.get("output_tokens", 0) for x in counted)
        parts.append(f"{tokens_in:,} in / {tokens_out:,} out tokens")
        cached = sum(x.get("cache_read_tokens", 0) for x in counted)
        if cached:
            parts.append(f"{cached:,} cached")
        rehearsed = usage.get("rehearsal") and not spends  # not metered: still no money
        parts.append(
            "$0 (rehearsal)" if rehearsed else spend_text(spends or [], usage.get("cost_usd"))
        )
    if end.get("session_spend"):  # the session against its budget or next pause
        parts.append(str(end["session_spend"]))
    if end.get("sandbox"):
        parts.append("SANDBOX OFF" if end["sandbox"] == "off" else f"sandbox: {end['sandbox']}")
    if "duration_s" in end:
        parts.append(f"{end['duration_s']:.1f} s")
    status = end.get("status", "")
    if status == "interrupted" and end.get("stopped"):
        parts.append(f"interrupted: stopped {end['stopped']} in {end.get('stop_s', 0):.1f} s")
    elif status != "completed":
        parts.append(status)
    if offline:
        parts.append("offline rehearsal model")
    line = " · ".join(parts)
    return {"text/plain": f"── {line}", "text/html": wrap(f"<sub>{escape(line)}</sub>")}


class CellView:
    """Renders one turn's events into the running cell."""

    def __init__(
        self,
        display: Callable[..., Any],
        update_display: Callable[..., Any],
        *,
        offline: bool = False,
        clock: Callable[[], float] = time.monotonic,
        images: SessionImages | None = None,
        stream: Callable[[str], Any] | None = None,
        schedule: Callable[[float, Callable[[], None]], Any] | None = None,
    ):
        self._display = display
        #: Where text goes when displays cannot be updated in place (None: update them).
        self._write = stream
        self._update = update_display
        #: Runs a callback after a delay, returning a handle with ``cancel()`` (the event
        #: loop's ``call_later``); None: every delta of a stream is written at once.
        self._schedule = schedule
        self._timer: Any = None
        #: Stream text not written yet (with a timer), and when it was written last.
        self._unwritten = ""
        self._last_write = float("-inf")
        #: Whether the text display is behind the text (an update is due).
        self._behind = False
        self._clock = clock
        self.offline = offline
        self.images = images
        self._text = ""
        self._text_id: str | None = None
        self._last_update = 0.0
        #: Seconds the last render of the text display took (see `RENDER_SHARE`).
        self._render_s = 0.0
        self._blocks = 0
        self._requests: dict[str, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        self._spends: list[dict[str, Any]] = []

    def show(self, event: Event) -> None:
        kind = event.kind
        if kind == EventKind.TEXT:
            self._stream_text(event.data.get("text", ""))
            return
        if kind == EventKind.USAGE:
            self._usage = event.data
            return
        if kind == EventKind.SPEND:
            # Metered as the model's stream ends, often while the agent still prints its text:
            # the text block goes on, unbroken.
            self._spends.append(event.data)
            return
        self.flush_text()
        if kind == EventKind.TOOL_CALL:
            self._emit(tool_call_bundle(event.data))
        elif kind == EventKind.TOOL_RESULT:
            self._emit(tool_result_bundle(event.data))
        elif kind == EventKind.APPROVAL_REQUEST:
            self._requests[event.data.get("request_id", "")] = event.data
        elif kind == EventKind.APPROVAL_DECISION:
            request = self._requests.pop(event.data.get("request_id", ""), {})
            self._emit(approval_bundle(request, event.data))
        elif kind == EventKind.NOTICE:
            self._emit(notice_bundle(event.data))
        elif kind == EventKind.ERROR:
            self._emit(error_bundle(event.data))
        elif kind == EventKind.TURN_END:
            self._emit(
                footer_bundle(event.harness, self._usage, event.data, self.offline, self._spends)
            )

    def _emit(self, bundle: Bundle) -> None:
        self._display(bundle, raw=True)

    def _stream_text(self, delta: str) -> None:
        if not delta:
            return
        self._text += delta
        if self._write is not None:
            if self._schedule is None:
                self._write(terminal_safe(delta))
                return
            self._unwritten += delta
            wait = self._last_write + STREAM_WRITE_INTERVAL - self._clock()
            if wait <= 0:
                self._write_unwritten()
            elif self._timer is None:
                self._timer = self._schedule(wait, self._on_timer)
            return
        if self._text_id is None:
            self._blocks += 1
            self._text_id = f"omnikernel-text-{id(self)}-{self._blocks}"
            self._display(self._text_bundle(), raw=True, display_id=self._text_id)
            self._last_update = self._clock()
            return
        interval = max(TEXT_UPDATE_INTERVAL, self._render_s / RENDER_SHARE)
        wait = self._last_update + interval - self._clock()
        if wait <= 0:
            self._update_text()
        else:
            self._behind = True
            if self._schedule is not None and self._timer is None:
                self._timer = self._schedule(wait, self._on_timer)

    def _write_unwritten(self) -> None:
        if self._write is not None and self._unwritten:
            self._write(terminal_safe(self._unwritten))
            self._unwritten = ""
            self._last_write = self._clock()

    def _update_text(self) -> None:
        if self._text_id is not None:
            self._update(self._text_bundle(), raw=True, display_id=self._text_id)
            self._last_update = self._clock()
        self._behind = False

    def _on_timer(self) -> None:
        """A delta's time to be shown came while no other came: show what is behind."""
        self._timer = None
        self._write_unwritten()
        if self._behind:
            self._update_text()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _text_bundle(self) -> Bundle:
        started = time.perf_counter()
        bundle = agent_bundle(self._text, images=self.images)
        self._render_s = time.perf_counter() - started
        return bundle

    def flush_text(self) -> None:
        """Show the whole text block and start a new one at the next delta."""
        self._cancel_timer()
        self._write_unwritten()
        if self._write is not None and self._text and not self._text.endswith("\n"):
            self._write("\n")
        if self._text_id is not None:
            self._update(self._text_bundle(), raw=True, display_id=self._text_id)
        self._text, self._text_id, self._behind, self._render_s = "", None, False, 0.0
