"""Redaction: credentials the kernel knows never reach an event, a cell or a log line.

Why: the agent can print its own environment (`env`, a config dump, `curl -v`), and that
holds its gateway session secret; what the agent prints is a tool result, which is stored,
shown in the cell, exported and streamed to share viewers. So everything that enters the store
passes a `Redactor` first (`SessionStore` applies it in its one append path; the session
teaches it each credential as it learns it: the gateway secrets it issues, the real API keys of
the kernel's configuration, the plan login's tokens, the rehearsal model's key, share codes).
Each known value is replaced by a label saying what it was: ``[redacted: gateway secret]``.

What is recognised, for each known value:

- the value itself, anywhere in a string (in dict keys too);
- its percent-encoding and JSON escaping (a value inside a URL, or printed as JSON twice);
- its base64 encoding at any alignment, in the standard and the URL-safe alphabet: an
  ``Authorization: Basic`` header (``user:secret``), ``echo $KEY | base64``, a JWT-like blob.
  A base64 run carries a value at one of three byte offsets; each offset has a core of
  characters that depends on the value's bytes only, and that core is what is looked for (the
  one or two characters at its ends may still show; they carry under 12 bits).

A text streamed in pieces (the answer's deltas) goes through a `TextStream`, which holds back
a tail that could be the start of a known value until the next piece shows whether it is.

Not recognised: a value the agent transforms on purpose (reversed, split, hex, encrypted).
Redaction stops accidents, not a hostile agent: the sandbox and the gateway do that (a session
secret is good only on this kernel's gateway, metered and capped by `%budget`). Values shorter
than `MIN_LENGTH` are refused, so a short value never mangles ordinary text.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

#: The shortest value taken: anything shorter would match ordinary text.
MIN_LENGTH = 8


def label_text(label: str) -> str:
    """What stands in the place of a value labelled `label`."""
    return f"[redacted: {label}]"


def variants(value: str) -> set[str]:
    """The forms of `value` an agent's output may show it in (see the module's docstring)."""
    forms = {value, urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]}
    raw = value.encode()
    for offset in range(3):
        start = -(-8 * offset // 6)  # the first character made of the value's bits only
        end = 8 * (offset + len(raw)) // 6  # past the last such character
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(b"\0" * offset + raw).decode()[start:end])
    return {f for f in forms if len(f) >= MIN_LENGTH}


class _Table:
    """The compiled form of a set of (value, label): one pattern, longest forms first."""

    def __init__(self, known: Iterable[tuple[str, str]]):
        self.label: dict[str, str] = {}
        for value, label in known:
            for form in variants(value):
                self.label.setdefault(form, label_text(label))
        forms = sorted(self.label, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, forms))) if forms else None
        #: Every proper prefix of every form (what a stream holds back).
        self.prefixes = {f[:n] for f in forms for n in range(1, len(f))}
        self.longest = len(forms[0]) if forms else 0

    def sub(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: self.label[m.group(0)], text)


class Redactor:
    """The values to redact, each with a label; redacts strings and nested event data.

    Values are added as the kernel learns them (`add`), or followed with `watch` where they
    change (a plan login's token after a refresh). Safe to use from several threads."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}  # value -> label
        self._watched: list[tuple[str, Callable[[], Iterable[str]]]] = []
        self._lock = threading.Lock()
        self._table: _Table | None = None
        self._table_key: frozenset[tuple[str, str]] = frozenset()

    def add(self, value: str, label: str) -> bool:
        """Redact `value` from now on, as `label`. False (nothing added) for a value shorter
        than `MIN_LENGTH`."""
        if not isinstance(value, str) or len(value) < MIN_LENGTH:
            return False
        with self._lock:
            self._known.setdefault(value, label)
        return True

    def forget(self, value: str) -> None:
        """Stop redacting `value` (added with `add`)."""
        with self._lock:
            self._known.pop(value, None)

    def watch(self, label: str, values: Callable[[], Iterable[str]]) -> None:
        """Redact whatever `values()` returns at each use, as `label`."""
        with self._lock:
            self._watched.append((label, values))

    def __len__(self) -> int:
        return len(self._current())

    def _current(self) -> frozenset[tuple[str, str]]:
        with self._lock:
            known = set(self._known.items())
            watched = list(self._watched)
        for label, values in watched:
            known |= {(v, label) for v in values() if isinstance(v, str) and len(v) >= MIN_LENGTH}
        return frozenset(known)

    def table(self) -> _Table:
        key = self._current()
        with self._lock:
            if self._table is None or key != self._table_key:
                self._table, self._table_key = _Table(key), key
            return self._table

    def text(self, text: str) -> str:
        """`text` with every known value replaced by its label."""
        return self.table().sub(text)

    def data(self, data: Any) -> Any:
        """`data` (JSON-like: dicts, lists, strings, numbers) with every string redacted, dict
        keys included (a copy: `data` itself is left as it is)."""
        table = self.table()
        if table.pattern is None:
            return data
        return _walk(data, table)

    def stream(self) -> TextStream:
        """A redactor for one text that arrives in pieces."""
        return TextStream(self)


def _walk(data: Any, table: _Table) -> Any:
    if isinstance(data, str):
        return table.sub(data)
    if isinstance(data, dict):
        return {_walk(k, table): _walk(v, table) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(_walk(v, table) for v in data)
    return data


class TextStream:
    """One text in pieces (an answer's deltas): `feed` returns what can be shown now, holding
    back a tail that may be the start of a known value; `flush` returns the rest. Joined, the
    pieces are `Redactor.text` of the whole text."""

    def __init__(self, redactor: Redactor):
        self._redactor = redactor
        self._held = ""

    def feed(self, piece: str) -> str:
        table = self._redactor.table()
        text = table.sub(self._held + piece)
        self._held = ""
        for start in range(max(0, len(text) - table.longest + 1), len(text)):
            if text[start:] in table.prefixes:
                text, self._held = text[:start], text[start:]
                break
        return text

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._redactor.text(held)


class LogFilter(logging.Filter):
    """Redacts each record a handler emits: its message (arguments merged in) and traceback."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True
