"""Record and replay a session's model traffic, so an agent notebook re-runs offline at $0.

A cassette is a JSON-lines file, one exchange a line: harness, API path, its position among
that harness's requests to that path, the prompt it answered (for matching), the model, and
the response (status, content type, and the streamed chunks or the whole body). Requests are
never written, nor any header, so keys and auth headers cannot leak into a cassette; response
text is redacted of the gateway's real keys and session secrets too (`omnikernel.store.redact`, the
same recognition the session store uses).

Replay serves exchanges by conversation position: the n-th request of a harness to a path gets
the n-th recorded answer, provided its prompt is the recorded one. Anything else is a
`CassetteMismatchError`, never a silent call upstream.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable
from pathlib import Path

from omnikernel.store.redact import Redactor


class CassetteMismatchError(Exception):
    pass


@dataclasses.dataclass
class Exchange:
    harness: str
    path: str
    index: int
    prompt: str
    model: str
    status: int
    content_type: str
    chunks: list[str]  # a streamed response, chunk by chunk; a whole body is one chunk
    streamed: bool

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Exchange:
        return cls(**json.loads(line))


class CassetteRecorder:
    def __init__(self, path: Path, secrets: Iterable[str] = ()):
        self.path = path
        #: What the gateway holds (it adds each secret it issues while recording).
        self.secrets = [s for s in secrets if s]
        self._redactor = Redactor()
        self._redactor.watch("credential", lambda: self.secrets)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def next_index(self, harness: str, path: str) -> int:
        with self._lock:
            n = self._counts.get((harness, path), 0)
            self._counts[(harness, path)] = n + 1
            return n

    def write(self, exchange: Exchange) -> None:
        exchange.chunks = [self._redactor.text(c) for c in exchange.chunks]
        with self._lock, self.path.open("a") as f:
            f.write(exchange.to_json() + "\n")


class CassettePlayer:
    def __init__(self, path: Path):
        self.path = path
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise CassetteMismatchError(f"cannot read cassette {path}: {exc}") from None
        self._exchanges: dict[tuple[str, str], list[Exchange]] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                exchange = Exchange.from_json(line)
            except (json.JSONDecodeError, TypeError) as exc:
                raise CassetteMismatchError(
                    f"{path}:{number} is not a cassette line: {exc}"
                ) from None
            self._exchanges.setdefault((exchange.harness, exchange.path), []).append(exchange)
        self._served: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(v) for v in self._exchanges.values())

    def answer(self, harness: str, path: str, prompt: str) -> Exchange:
        key = (harness, path)
        with self._lock:
            n = self._served.get(key, 0)
            recorded = self._exchanges.get(key, [])
            if n >= len(recorded):
                raise CassetteMismatchError(
                    f"the cassette {self.path.name} has {len(recorded)} {path} exchange(s) for "
                    f"{harness}, and this is request {n + 1}: the notebook asks more than was "
                    f"recorded. Re-record with %record, or stop replaying with %replay off."
                )
            exchange = recorded[n]
            if exchange.prompt != prompt:
                raise CassetteMismatchError(
                    f"request {n + 1} of {harness} to {path} does not match the cassette "
                    f"{self.path.name}: recorded prompt {exchange.prompt[:80]!r}, got "
                    f"{prompt[:80]!r}. Re-record with %record, or stop replaying with %replay off."
                )
            self._served[key] = n + 1
            return exchange
