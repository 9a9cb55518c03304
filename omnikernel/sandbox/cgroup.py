"""A control group per sandboxed harness: memory and process-count limits, and a kill that
reaches every descendant, orphans and double-forked daemons included.

Works with cgroup v2 (``cgroup.kill``, ``memory.max``, ``pids.max``) and with the v1
``memory`` and ``pids`` hierarchies of a hybrid setup, whichever are writable. Memory is never
limited through an address-space rlimit: that breaks node's WebAssembly. Where no cgroup can
be made (no permission, read-only /sys), `CGroup.create` returns None and the caller falls back
to killing the process group; `describe()` says which applies.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_path(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy (``""`` for v2), from /proc/self/cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(",") or (controller == "" and controllers == ""):
            return path.lstrip("/")
    return ""


def _v2_root() -> Path | None:
    for candidate in (ROOT / "unified", ROOT):
        if (candidate / "cgroup.procs").exists() and (candidate / "cgroup.controllers").exists():
            return candidate
    return None


class CGroup:
    """The cgroup directories (one per hierarchy) of one sandboxed process tree."""

    def __init__(self, dirs: list[Path]):
        self.dirs = dirs

    @classmethod
    def create(cls, memory_bytes: int | None, pids_max: int | None) -> CGroup | None:
        name = f"omnikernel-{uuid.uuid4().hex[:12]}"
        dirs: list[Path] = []
        v2 = _v2_root()
        candidates = []
        if v2 is not None:
            candidates.append(v2 / _own_path("") / name)
        for controller in ("memory", "pids"):
            if (ROOT / controller / "cgroup.procs").exists():
                candidates.append(ROOT / controller / _own_path(controller) / name)
        for path in candidates:
            try:
                path.mkdir()
            except OSError:
                continue
            dirs.append(path)
        if not dirs:
            return None
        group = cls(dirs)
        group._limit(memory_bytes, pids_max)
        return group

    def _limit(self, memory_bytes: int | None, pids_max: int | None) -> None:
        for d in self.dirs:
            for filename, value in (
                ("memory.max", memory_bytes),
                ("memory.limit_in_bytes", memory_bytes),
                ("pids.max", pids_max),
            ):
                if value is not None and (d / filename).exists():
                    with contextlib.suppress(OSError):
                        (d / filename).write_text(str(value))

    @property
    def limits(self) -> dict[str, str]:
        found = {}
        for d in self.dirs:
            for filename in ("memory.max", "memory.limit_in_bytes", "pids.max"):
                with contextlib.suppress(OSError):
                    found[filename] = (d / filename).read_text().strip()
        return found

    def joined(self, argv: list[str]) -> list[str]:
        """`argv` started by a shell that first moves itself into the group and then execs it
        (same pid), so nothing escapes by forking early. Cheaper than `add_self` as a
        ``preexec_fn``: that forces a full fork of the kernel and Python code in the child
        (about 22 ms more from a process of the kernel's size; the shell costs ~1 ms)."""
        joins = "; ".join(
            f"{{ echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}; }} 2>/dev/null"
            for d in self.dirs
        )
        return ["/bin/sh", "-c", f'{joins}; exec "$@"', "sh", *argv]

    def add_self(self) -> None:
        """Move the calling process in (run in the child before exec: no fork escapes)."""
        for d in self.dirs:
            with contextlib.suppress(OSError):
                (d / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
        return found

    @contextlib.contextmanager
    def frozen(self, timeout: float = 0.2) -> Iterator[bool]:
        """Freeze the group (cgroup v2 ``cgroup.freeze``) for the block, so nothing in it runs
        or forks while it is signalled; yields whether it froze (False without a v2 group).
        Fatal signals still reach frozen processes: they die as soon as they are thawed."""
        knobs = [d / "cgroup.freeze" for d in self.dirs if (d / "cgroup.freeze").exists()]
        froze = False
        for knob in knobs:
            with contextlib.suppress(OSError):
                knob.write_text("1")
                froze = self._wait_frozen(knob.parent, timeout)
        try:
            yield froze
        finally:
            for knob in knobs:
                with contextlib.suppress(OSError):
                    knob.write_text("0")

    @staticmethod
    def _wait_frozen(group: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "frozen 1" in (group / "cgroup.events").read_text():
                return True
            time.sleep(0.001)
        return False

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL everything in the group, then remove it."""
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (d / "cgroup.kill").write_text("1")
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for d in self.dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


def describe() -> str:
    """What this machine offers, for `%agents` and error messages."""
    probe = CGroup.create(None, None)
    if probe is None:
        return "process group (no writable cgroup)"
    kinds = ", ".join(
        sorted(
            {
                "v2" if "unified" in str(d) or (d / "cgroup.kill").exists() else d.parts[4]
                for d in probe.dirs
            }
        )
    )
    probe.kill()
    return f"cgroup ({kinds})"
