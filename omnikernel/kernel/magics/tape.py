"""`%record`, `%replay`: a notebook's model traffic on tape (cassettes, keys redacted).

IPython line magics acting on the kernel's `AgentSession` (see `omnikernel.kernel.magics`)."""

from __future__ import annotations

from pathlib import Path

from IPython.core.error import UsageError
from IPython.core.magic import line_magic, magics_class

from omnikernel.gateway import CassetteMismatchError
from omnikernel.kernel.magics.common import SessionMagicsBase, show


@magics_class
class TapeMagics(SessionMagicsBase):
    def _cassette_path(self, word: str) -> Path:
        """FILE as given, else `<notebook>.cassette.jsonl` beside the notebook (or
        `session.cassette.jsonl` in the working directory when the notebook is unknown)."""
        if word:
            return Path(word).expanduser()
        notebook = Path(self.session.notebook)
        if notebook.suffix == ".ipynb":
            return notebook.with_name(f"{notebook.stem}.cassette.jsonl")
        return self.session.cwd / "session.cassette.jsonl"

    @line_magic
    def record(self, line: str) -> None:
        """%record [FILE|off]: save every model exchange to a cassette (keys redacted)."""
        word = line.strip()
        gateway = self.session.gateway
        if word == "off":
            gateway.stop_tape()
            show("Recording stopped.")
            return
        path = self._cassette_path(word)
        gateway.record_to(path)
        show(f"Recording model traffic to {path}. Replay it with %replay {path.name}.")

    @line_magic
    def replay(self, line: str) -> None:
        """%replay FILE|off: answer model calls from a cassette instead of the upstream."""
        word = line.strip()
        gateway = self.session.gateway
        if word == "off":
            gateway.stop_tape()
            show("Replay stopped: model calls go upstream again.")
            return
        path = self._cassette_path(word)
        try:
            count = gateway.replay_from(path)
        except CassetteMismatchError as exc:
            raise UsageError(str(exc)) from None
        carried = ""
        if (earlier := self.session.store.last_turn(self.session.session_id)) > 0:
            carried = (
                f" This session already holds {earlier} turn(s) from before, and the agents are "
                f"handed them (native resume or a handoff): a re-run carries that history. Run "
                f"`%session new` before `%replay` to replay from a clean start."
            )
        show(
            f"Replaying {count} recorded exchange(s) from {path}: no call goes upstream, and a "
            f"call that does not match the cassette is an error.{carried}"
        )
