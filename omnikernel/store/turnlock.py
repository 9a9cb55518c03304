"""One turn at a time per session, across kernels: a file lock beside the session store.

Two kernels may have one notebook open (two tabs, a console beside the notebook, a restarted
kernel whose old one still runs). The store gives every event the next sequence number of its
session, so two turns running at once would interleave their events. `TurnLock` is an
``fcntl.flock`` on ``<store folder>/locks/<session>.turn.lock``, taken before a turn starts and
released when its end is stored: turns of one session run one after the other, each stored
whole. The kernel that holds it writes who it is into the file, so a waiting kernel can say
whom it waits for. The operating system releases the lock of a kernel that dies, so a killed
kernel never blocks the session.

A flock belongs to an open file, so two turns in one kernel (an approval answered after a
restart runs its own turn, see `omnikernel.approvals.after_restart`) wait for each other as well. Waiting
polls without blocking, so cancelling a wait (the stop button) is immediate and leaves nothing
behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

#: Seconds between two tries of a held lock.
POLL_S = 0.05
_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def lock_path(store_path: Path, session_id: str) -> Path:
    """Where `session_id`'s turn lock lives (a hashed name for an id that is no file name)."""
    name = (
        session_id
        if _SAFE.match(session_id) and not session_id.startswith(".")
        else (hashlib.sha256(session_id.encode()).hexdigest()[:32])
    )
    return store_path.parent / "locks" / f"{name}.turn.lock"


class TurnLock:
    """The right to run one turn of one session (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    async def acquire(self, on_wait: Callable[[str], None] | None = None, holder: str = "") -> None:
        """Take the lock, waiting as long as another turn holds it; `on_wait` is told once
        who holds it. Cancelling the wait leaves the lock untouched."""
        told = False
        while not self.try_acquire():
            if not told:
                told = True
                if on_wait is not None:
                    on_wait(self.holder())
            await asyncio.sleep(POLL_S)
        self._note(holder)

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("" if unknown)."""
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _note(self, holder: str) -> None:
        assert self._fd is not None
        text = holder or f"kernel {os.getpid()} on {socket.gethostname()}"
        with contextlib.suppress(OSError):  # only a courtesy to whoever waits
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def release(self) -> None:
        """Let the next turn run (closing the file drops the flock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
