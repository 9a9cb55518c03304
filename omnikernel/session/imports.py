"""Bring in a conversation started in a terminal: read a CLI's own session file on the host and
store its turns as events of a new notebook session.

Where each CLI keeps its sessions (the kernel's environment decides, as it does for the CLI):

- Claude Code: ``$CLAUDE_CONFIG_DIR`` (else ``~/.claude``) ``/projects/<cwd slug>/<id>.jsonl``;
- Codex: ``$CODEX_HOME`` (else ``~/.codex``) ``/sessions/YYYY/MM/DD/rollout-<time>-<id>.jsonl``;
- Pi: ``$PI_CODING_AGENT_DIR`` (else ``~/.pi/agent``) ``/sessions/<cwd slug>/<time>_<id>.jsonl``.

Each file is JSON lines. What maps onto the kernel's events is stored as such: a user's prompt
opens a turn (``turn_start``), the agent's text is ``text``, a tool call and its output are
``tool_call`` / ``tool_result`` (the same call id). Every other record (the CLIs' bookkeeping,
context they inject, thinking, records this version does not know) is kept as it was: each
turn ends with a ``notice`` holding them under ``raw``, so nothing is dropped silently. The
events go through the store's redactor like any other.

The file is read, never written, and only on the host side: nothing of it reaches a sandbox
except what the next turn hands over. The next prompt continues the conversation with the same
harness: the imported turns are handed over (`omnikernel.session.handoff`), which works for
every CLI whatever it keeps where (a native resume would need the session file copied into the
sandboxed CLI's private config and the same working directory).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omnikernel.events import Event, EventKind
from omnikernel.gateway.wire import prompt_of, texts_of
from omnikernel.harnesses.claude import TOOL_ACTIONS as CLAUDE_ACTIONS
from omnikernel.harnesses.pi import TOOL_ACTIONS as PI_ACTIONS

IMPORTABLE = ("claude", "codex", "pi")
#: Tool names of the three CLIs by what they do (see `omnikernel.events.ACTIONS`).
ACTIONS = {**CLAUDE_ACTIONS, **PI_ACTIONS, "exec_command": "exec", "shell": "exec",
           "shell_command": "exec", "apply_patch": "edit", "update_plan": "plan"}  # fmt: skip
SUMMARY_KEYS = ("command", "cmd", "file_path", "path", "pattern", "url")


class SessionImportError(Exception):
    """The session cannot be imported; the message says what to do."""


@dataclasses.dataclass
class ImportedSession:
    """One terminal session, read: its turns as events (not stored yet)."""

    harness: str
    native_id: str
    path: Path
    cwd: str
    turns: list[list[Event]]
    raw_records: int

    @property
    def summary(self) -> str:
        calls = sum(1 for t in self.turns for e in t if e.kind == EventKind.TOOL_CALL)
        return (
            f"{len(self.turns)} turn(s), {calls} tool call(s), {self.raw_records} other "
            f"record(s) kept as they were"
        )


# -- where the files are ---------------------------------------------------------------------


def home_of(harness: str, env: Mapping[str, str]) -> Path:
    home = Path(env.get("HOME") or Path.home())
    if harness == "claude":
        return Path(env.get("CLAUDE_CONFIG_DIR") or home / ".claude")
    if harness == "codex":
        return Path(env.get("CODEX_HOME") or home / ".codex")
    return Path(env.get("PI_CODING_AGENT_DIR") or home / ".pi" / "agent")


def session_files(harness: str, env: Mapping[str, str]) -> list[Path]:
    """Every session file of `harness`, newest first."""
    root = home_of(harness, env)
    pattern = {
        "claude": "projects/*/*.jsonl",
        "codex": "sessions/**/rollout-*.jsonl",
        "pi": "sessions/*/*.jsonl",
    }[harness]
    found = [p for p in root.glob(pattern) if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def find_session(
    harness: str, which: str = "latest", env: Mapping[str, str] | None = None, cwd: str = ""
) -> Path:
    """The session file `which` names: an id (or its start), or ``latest`` (the newest one
    started in `cwd` if there is one, else the newest of all)."""
    if harness not in IMPORTABLE:
        raise SessionImportError(
            f"Cannot import {harness!r} sessions: only {', '.join(IMPORTABLE)} (their own "
            "session files) can be imported."
        )
    env = os.environ if env is None else env
    files = session_files(harness, env)
    where = home_of(harness, env)
    if not files:
        raise SessionImportError(
            f"No {harness} sessions under {where}: start one in a terminal first (or set "
            f"{'CLAUDE_CONFIG_DIR' if harness == 'claude' else 'CODEX_HOME' if harness == 'codex' else 'PI_CODING_AGENT_DIR'} "
            "to where the CLI keeps them)."
        )
    if which in ("", "latest"):
        if cwd:
            for path in files:
                if read_cwd(harness, path) == cwd:
                    return path
        return files[0]
    matches = [p for p in files if which in p.stem]
    if len(matches) != 1:
        shown = ", ".join(session_id_of(harness, p) for p in files[:5])
        how = "no" if not matches else f"{len(matches)}"
        raise SessionImportError(
            f"{how.capitalize()} {harness} session matches {which!r} under {where}; "
            f"the latest are: {shown}. Give more of the id, or `latest`."
        )
    return matches[0]


def session_id_of(harness: str, path: Path) -> str:
    stem = path.stem
    if harness == "codex":
        return stem[-36:]
    if harness == "pi":
        return stem.rpartition("_")[2]
    return stem


def records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"unparsed_line": line.rstrip("\n")}
            yield record if isinstance(record, dict) else {"value": record}


def read_cwd(harness: str, path: Path) -> str:
    for record in records(path):
        if harness == "claude" and isinstance(record.get("cwd"), str):
            return str(record["cwd"])
        if harness == "codex" and record.get("type") == "session_meta":
            return str((record.get("payload") or {}).get("cwd", ""))
        if harness == "pi" and record.get("type") == "session":
            return str(record.get("cwd", ""))
    return ""


# -- reading each format into items ----------------------------------------------------------

Item = tuple[str, Any]  # ("prompt", text) | ("text", text) | ("call", (id, name, input))
#                         | ("result", (id, output, is_error)) | ("raw", record)


def _output_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(texts_of(content, ("text", "output_text", "input_text")))


def claude_items(record: dict[str, Any]) -> list[Item]:
    kind, message = record.get("type"), record.get("message") or {}
    if kind == "user" and not record.get("isMeta"):
        content = message.get("content")
        results = [
            b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        if results and isinstance(content, list):
            return [
                ("result", (str(b.get("tool_use_id", "")), _output_text(b.get("content")),
                            bool(b.get("is_error"))))
                for b in results
            ]  # fmt: skip
        prompt = prompt_of(texts_of(content))
        return [("prompt", prompt)] if prompt else [("raw", record)]
    if kind == "assistant":
        items: list[Item] = []
        for block in message.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                items.append(("text", str(block["text"])))
            elif block.get("type") == "tool_use":
                items.append(
                    ("call", (str(block.get("id", "")), str(block.get("name", "")),
                              block.get("input") or {}))
                )  # fmt: skip
            else:
                items.append(("raw", {**record, "message": {**message, "content": [block]}}))
        return items
    return [("raw", record)]


def codex_items(record: dict[str, Any]) -> list[Item]:
    payload = record.get("payload") or {}
    if record.get("type") != "response_item":
        return [("raw", record)]
    kind, role = payload.get("type"), payload.get("role")
    if kind == "message" and role == "user":
        prompt = prompt_of(texts_of(payload.get("content")))
        return [("prompt", prompt)] if prompt else [("raw", record)]
    if kind == "message" and role == "assistant":
        text = _output_text(payload.get("content"))
        return [("text", text)] if text else [("raw", record)]
    if kind == "function_call":
        try:
            arguments = json.loads(payload.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = {"arguments": payload.get("arguments")}
        call = (str(payload.get("call_id", "")), str(payload.get("name", "")), arguments)
        return [("call", call)]
    if kind == "function_call_output":
        output = payload.get("output")
        text = output if isinstance(output, str) else json.dumps(output)
        return [("result", (str(payload.get("call_id", "")), text, False))]
    return [("raw", record)]


def pi_items(record: dict[str, Any]) -> list[Item]:
    message = record.get("message") or {}
    if record.get("type") != "message":
        return [("raw", record)]
    role = message.get("role")
    if role == "user":
        prompt = prompt_of(texts_of(message.get("content")))
        return [("prompt", prompt)] if prompt else [("raw", record)]
    if role == "assistant":
        items: list[Item] = []
        for block in message.get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                items.append(("text", str(block["text"])))
            elif block.get("type") == "toolCall":
                items.append(
                    ("call", (str(block.get("id", "")), str(block.get("name", "")),
                              block.get("arguments") or {}))
                )  # fmt: skip
            else:
                items.append(("raw", {**record, "message": {**message, "content": [block]}}))
        return items
    if role == "toolResult":
        result = (
            str(message.get("toolCallId", "")),
            _output_text(message.get("content")),
            bool(message.get("isError")),
        )
        return [("result", result)]
    return [("raw", record)]


READERS = {"claude": claude_items, "codex": codex_items, "pi": pi_items}


# -- items into turns ------------------------------------------------------------------------


def _tool_call(call_id: str, name: str, arguments: Any) -> Event:
    args = arguments if isinstance(arguments, dict) else {"input": arguments}
    summary = next((str(args[k]) for k in SUMMARY_KEYS if isinstance(args.get(k), str)), name)
    return Event(
        EventKind.TOOL_CALL,
        {
            "call_id": call_id,
            "tool": name,
            "action": ACTIONS.get(name, "other"),
            "summary": summary,
            "input": args,
        },
    )


def turns_of(harness: str, items: Iterable[Item], native_id: str) -> tuple[list[list[Event]], int]:
    """Items grouped into turns, each closed by its raw records and a ``turn_end``."""
    turns: list[list[Event]] = []
    raw: list[dict[str, Any]] = []
    count = 0

    def close() -> None:
        if not turns:
            return
        if raw:
            kinds = sorted({str(r.get("type", "?")) for r in raw})
            turns[-1].append(
                Event(
                    EventKind.NOTICE,
                    {
                        "message": f"{len(raw)} record(s) of the {harness} session file kept "
                        f"as they were ({', '.join(kinds)}).",
                        "raw": list(raw),
                        "imported": True,
                    },
                )
            )
            raw.clear()
        end = {"status": "completed", "harness_session": native_id, "imported": True}
        turns[-1].append(Event(EventKind.TURN_END, end))

    for kind, value in items:
        if kind == "prompt":
            close()
            start = {"prompt": value, "model": None, "imported_from": harness}
            turns.append([Event(EventKind.TURN_START, start)])
            continue
        if kind == "raw":
            raw.append(value)
            count += 1
            continue
        if not turns:  # an answer before any prompt: kept, not invented into a turn
            raw.append({"type": f"{kind} before the first prompt", "value": value})
            count += 1
            continue
        if kind == "text":
            turns[-1].append(Event(EventKind.TEXT, {"text": value}))
        elif kind == "call":
            turns[-1].append(_tool_call(*value))
        elif kind == "result":
            call_id, output, is_error = value
            data = {"call_id": call_id, "output": output, "is_error": is_error}
            turns[-1].append(Event(EventKind.TOOL_RESULT, data))
    if not turns and raw:
        start = {"prompt": "", "model": None, "imported_from": harness}
        turns.append([Event(EventKind.TURN_START, start)])
    close()
    return turns, count


def read_session(harness: str, path: Path) -> ImportedSession:
    """Read `path`, a session file of `harness`, into turns of events."""
    try:
        items = [item for record in records(path) for item in READERS[harness](record)]
    except OSError as exc:
        raise SessionImportError(f"Cannot read {path}: {exc}") from None
    native_id = session_id_of(harness, path)
    turns, raw = turns_of(harness, items, native_id)
    if not any(t[0].data.get("prompt") for t in turns):
        raise SessionImportError(f"{path} holds no prompt to continue from: nothing was imported.")
    return ImportedSession(harness, native_id, path, read_cwd(harness, path), turns, raw)


def store_session(store: Any, imported: ImportedSession, session_id: str, notebook: str) -> int:
    """Append `imported`'s turns to `session_id` in `store` (a `SessionStore`); returns how
    many events were stored."""
    store.open_session(session_id, notebook)
    stored = 0
    for turn in imported.turns:
        start, *rest = turn
        first = store.start_turn(
            dataclasses.replace(start, session_id=session_id, harness=imported.harness)
        )
        for event in rest:
            store.append(
                dataclasses.replace(
                    event, session_id=session_id, harness=imported.harness, turn=first.turn
                )
            )
        stored += len(turn)
    return stored
