"""A stored session written out for people and tools: Markdown, HTML, JSON Lines or a notebook.

Everything comes from the store's events, so an export shows what happened in the order it
happened: each turn's prompt, the agent's text, its tool calls with their results (edits as
diffs), approvals with who decided them, notices and errors, and what each turn cost. Agent
text is untrusted: the HTML export renders it with `sanitize.render_markdown` (no raw HTML, no
scripts, no remote images, safe links) and escapes everything else.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnikernel.events import Event, EventKind
from omnikernel.view.render import edit_diff, fence
from omnikernel.view.sanitize import escape, preformatted, render_markdown

FORMATS = ("md", "html", "jsonl", "ipynb")
SUFFIX = {"md": ".md", "html": ".html", "jsonl": ".jsonl", "ipynb": ".ipynb"}


class ExportError(ValueError):
    """An export that cannot be made (unknown format, unknown session): says what to do."""


@dataclass
class Turn:
    """One turn's events, gathered for writing out."""

    number: int
    harness: str = ""
    prompt: str = ""
    model: str | None = None
    #: Who sent a prompt that no cell of the notebook did (a co-driver on the share page).
    by: str = ""
    started: float = 0.0
    status: str = "running"
    cost_usd: float = 0.0
    priced: bool = True
    tokens: int = 0
    #: Model calls the offline rehearsal model answered: they cost $0, nothing was spent.
    rehearsal: int = 0
    calls: int = 0
    #: ("text", str) | ("tool", call, result) | ("approval", request, decision)
    #: | ("notice", str) | ("error", str): in order. A tool or approval part is a list, so its
    #: result or decision fills it in when that arrives.
    parts: list[Sequence[Any]] = field(default_factory=list)


def gather(events: Iterable[Event]) -> list[Turn]:
    """The session's events as turns, oldest first; text deltas joined."""
    turns: dict[int, Turn] = {}
    calls: dict[str, list[Any]] = {}
    approvals: dict[str, list[Any]] = {}
    for e in events:
        turn = turns.setdefault(e.turn, Turn(e.turn, e.harness, started=e.ts))
        d = e.data
        if e.kind == EventKind.TURN_START:
            turn.prompt, turn.model, turn.harness, turn.started = (
                d.get("prompt", ""),
                d.get("model"),
                e.harness,
                e.ts,
            )
            if d.get("by"):
                turn.by = f"{d['by']} ({d.get('source', '')})".replace(" ()", "")
                if d.get("runs_as"):
                    turn.by += f", run with {d['runs_as']}'s credentials and budget"
        elif e.kind == EventKind.TEXT:
            if turn.parts and turn.parts[-1][0] == "text":
                turn.parts[-1] = ("text", turn.parts[-1][1] + d.get("text", ""))
            else:
                turn.parts.append(("text", d.get("text", "")))
        elif e.kind == EventKind.TOOL_CALL:
            part = ["tool", d, None]
            calls[d.get("call_id", "")] = part
            turn.parts.append(part)
        elif e.kind == EventKind.TOOL_RESULT:
            if (call := calls.get(d.get("call_id", ""))) is not None:
                call[2] = d
        elif e.kind == EventKind.APPROVAL_REQUEST:
            part = ["approval", d, None]
            approvals[d.get("request_id", "")] = part
            turn.parts.append(part)
        elif e.kind == EventKind.APPROVAL_DECISION:
            if (request := approvals.get(d.get("request_id", ""))) is not None:
                request[2] = d
            else:
                turn.parts.append(("approval", {}, d))
        elif e.kind == EventKind.NOTICE:
            turn.parts.append(("notice", str(d.get("message", ""))))
        elif e.kind == EventKind.ERROR:
            message = str(d.get("message", ""))
            turn.parts.append(("error", message + (f" {d['hint']}" if d.get("hint") else "")))
        elif e.kind == EventKind.SPEND:
            turn.calls += 1
            turn.rehearsal += bool(d.get("rehearsal") and not d.get("priced_as"))
            if d.get("cost_usd") is None:
                turn.priced = False
            else:
                turn.cost_usd += float(d["cost_usd"])
            turn.tokens += int(d.get("input_tokens", 0) or 0) + int(d.get("output_tokens", 0) or 0)
        elif e.kind == EventKind.TURN_END:
            turn.status = str(d.get("status", ""))
            if d.get("stopped"):
                turn.status += f" (stopped {d['stopped']})"
    return [turns[k] for k in sorted(turns) if k > 0 or turns[k].parts]


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _decided(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "not decided"
    by = decision.get("by") or "unknown"
    reason = f": {decision['reason']}" if decision.get("reason") else ""
    return f"{decision.get('decision', '?')} by {by}{reason}"


def _spend(turn: Turn) -> str:
    cost = f"${turn.cost_usd:.4f}" + ("" if turn.priced else " + unpriced calls")
    if turn.calls and turn.rehearsal == turn.calls:
        cost = "$0 (rehearsal)"
    return f"{turn.tokens:,} tokens · {cost}"


def _header(row: dict[str, Any], turns: list[Turn]) -> list[tuple[str, str]]:
    harnesses = sorted({t.harness for t in turns if t.harness})
    total = sum(t.cost_usd for t in turns)
    calls = sum(t.calls for t in turns)
    rehearsed = calls > 0 and sum(t.rehearsal for t in turns) == calls
    return [
        ("Session", row["session_id"]),
        ("Notebook", row.get("notebook") or "-"),
        ("Forked from", row.get("origin") or "-"),
        ("Harnesses", ", ".join(harnesses) or "-"),
        ("Turns", str(len([t for t in turns if t.number > 0]))),
        ("Spend", "$0 (rehearsal)" if rehearsed else f"${total:.4f}"),
        ("Last activity", _when(row["updated"])),
    ]


# -- Markdown --------------------------------------------------------------------------------


def _turn_markdown(turn: Turn) -> str:
    out = [f"## Turn {turn.number} · {turn.harness} · {turn.status}", ""]
    out += [
        f"*{_when(turn.started)}"
        + (f" · model {turn.model}" if turn.model else "")
        + (f" · prompt from {turn.by}" if turn.by else "")
        + "*",
        "",
    ]
    if turn.prompt:
        out += ["> " + line for line in turn.prompt.splitlines()] + [""]
    for kind, *rest in turn.parts:
        if kind == "text":
            out += [rest[0].strip(), ""]
        elif kind == "tool":
            call, result = rest
            out += [f"**▶ {call.get('tool', '?')}**: `{call.get('summary', '')}`", ""]
            if diff := edit_diff(call):
                out += [fence(diff, "diff"), ""]
            if result is not None:
                label = "error" if result.get("is_error") else "output"
                out += [f"{label}:", "", fence(str(result.get("output", ""))), ""]
        elif kind == "approval":
            request, decision = rest
            what = f"{request.get('tool', 'a tool')} `{request.get('summary', '')}`"
            out += [f"**Approval** for {what}: {_decided(decision)}", ""]
        elif kind == "notice":
            out += [f"*[omnigent] {rest[0]}*", ""]
        elif kind == "error":
            out += [f"**Error:** {rest[0]}", ""]
    out += [f"*Spend: {_spend(turn)}*", ""]
    return "\n".join(out)


def to_markdown(row: dict[str, Any], events: list[Event]) -> str:
    turns = gather(events)
    head = [f"# Omnigent session {row['session_id']}", ""]
    head += [f"- **{k}:** {v}" for k, v in _header(row, turns)] + [""]
    return "\n".join(head + [_turn_markdown(t) for t in turns])


# -- HTML ------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
.prompt{border-left:4px solid #88a;padding:.2rem .8rem;background:#f4f4fa;white-space:pre-wrap}
.meta,.notice{color:#666}.error{color:#a00}pre{background:#f6f6f6;padding:.5rem;overflow:auto}
.turn{border-top:1px solid #ddd;margin-top:1.5rem}"""


def _turn_html(turn: Turn) -> str:
    out = [
        f'<section class="turn"><h2>Turn {turn.number} · {escape(turn.harness)} · '
        f"{escape(turn.status)}</h2>",
        f'<p class="meta">{_when(turn.started)}'
        + (f" · model {escape(turn.model)}" if turn.model else "")
        + (f" · prompt from {escape(turn.by)}" if turn.by else "")
        + "</p>",
    ]
    if turn.prompt:
        out.append(f'<div class="prompt">{escape(turn.prompt)}</div>')
    for kind, *rest in turn.parts:
        if kind == "text":
            out.append(render_markdown(rest[0]))  # untrusted agent Markdown, made safe
        elif kind == "tool":
            call, result = rest
            out.append(
                f"<p><b>▶ {escape(str(call.get('tool', '?')))}</b>: "
                f"<code>{escape(str(call.get('summary', '')))}</code></p>"
            )
            if diff := edit_diff(call):
                out.append(preformatted(diff))
            if result is not None:
                out.append(preformatted(str(result.get("output", ""))))
        elif kind == "approval":
            request, decision = rest
            out.append(
                f"<p><b>Approval</b> for {escape(str(request.get('tool', 'a tool')))} "
                f"<code>{escape(str(request.get('summary', '')))}</code>: "
                f"{escape(_decided(decision))}</p>"
            )
        elif kind == "notice":
            out.append(f'<p class="notice">[omnigent] {escape(rest[0])}</p>')
        elif kind == "error":
            out.append(f'<p class="error">Error: {escape(rest[0])}</p>')
    out.append(f'<p class="meta">Spend: {escape(_spend(turn))}</p></section>')
    return "\n".join(out)


def to_html(row: dict[str, Any], events: list[Event]) -> str:
    turns = gather(events)
    title = escape(f"Omnigent session {row['session_id']}")
    facts = "".join(f"<li><b>{escape(k)}:</b> {escape(v)}</li>" for k, v in _header(row, turns))
    # No script runs in an export: the page says so to the browser too.
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">'
        f"<title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>"
        f"<ul>{facts}</ul>\n" + "\n".join(_turn_html(t) for t in turns) + "\n</body></html>\n"
    )


# -- JSON Lines and notebooks ----------------------------------------------------------------


def to_jsonl(row: dict[str, Any], events: list[Event]) -> str:
    """Every stored event, one JSON object a line, as the store holds it (lossless)."""
    return "".join(json.dumps(e.to_dict(), default=str) + "\n" for e in events)


def to_ipynb(row: dict[str, Any], events: list[Event]) -> str:
    """A notebook for the Omnigent kernel: one prompt cell a turn, its output as Markdown."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "omnikernel",
        "display_name": "Omnigent",
        "language": "markdown",
    }
    nb.metadata["omnikernel"] = {"exported_from": row["session_id"]}
    facts = "\n".join(f"- **{k}:** {v}" for k, v in _header(row, gather(events)))
    nb.cells.append(
        nbformat.v4.new_markdown_cell(f"# Omnigent session {row['session_id']}\n\n{facts}")
    )
    for turn in gather(events):
        body = _turn_markdown(turn).split("\n", 2)[-1]  # the heading is the cell itself
        cell = nbformat.v4.new_code_cell(turn.prompt, execution_count=turn.number or None)
        cell.outputs = [
            nbformat.v4.new_output("display_data", data={"text/markdown": body, "text/plain": body})
        ]
        nb.cells.append(cell)
    nbformat.validate(nb)
    text: str = nbformat.writes(nb)
    return text


WRITERS = {"md": to_markdown, "html": to_html, "jsonl": to_jsonl, "ipynb": to_ipynb}


def check_format(fmt: str) -> str:
    fmt = fmt.lower().lstrip(".")
    fmt = {"markdown": "md", "json": "jsonl", "notebook": "ipynb", "htm": "html"}.get(fmt, fmt)
    if fmt not in WRITERS:
        raise ExportError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    return fmt


def export_session(store: Any, session_id: str, fmt: str) -> str:
    """The session as text in `fmt` (see `FORMATS`)."""
    fmt = check_format(fmt)
    row = store.session(session_id)
    if row is None:
        raise ExportError(
            f"There is no session {session_id!r} in {store.path}: `omnikernel sessions` lists them."
        )
    return WRITERS[fmt](row, list(store.events(session_id)))


def write_whole(path: Path, text: str) -> None:
    """Write `path` at once (a temporary file renamed over it): never a half-written export."""
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def default_export_name(session_id: str, fmt: str) -> str:
    return f"{session_id}{SUFFIX[fmt]}"
