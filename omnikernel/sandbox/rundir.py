"""What a sandboxed process leaves on the host, and how it is cleaned up, even after a crash.

Each sandboxed process gets one run dir, ``<tmp>/omnikernel-run-<uid>/<id>/``, holding its
bridge sockets (``b/``), the empty file and dir the backends mount over masked paths, the
firejail backend's profile (the whole plan: firejail's command line is limited), and a
manifest: the kernel's pid and start time, and the placeholders put in the notebook's folder so
that protected paths that did not exist cannot be created. `RunDir.remove` deletes all of it when
the process stops. When a kernel is killed and cannot clean up, the next `RunDir.create` (any
kernel of the same user) sweeps every run dir whose owner is gone: placeholders still empty are
removed, unless a live run dir claims them too.

The kernel's model gateway keeps its unix socket in a run dir of its own (``gateway.sock``,
`omnikernel.gateway.server`), so a killed kernel's socket is swept the same way. The run root
is the user's own, mode 0700: in a shared ``/tmp`` another user could otherwise have made it
first (and could then swap a socket for one of their own), so `private_root` refuses a root
that is a link, belongs to someone else, or is open to others.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from omnikernel.sandbox.spec import placeholder_for


def run_root() -> Path:
    return Path(tempfile.gettempdir()) / f"omnikernel-run-{os.getuid()}"


def private_root(root: Path) -> Path:
    """`root`, made if missing: a real directory of this user that no one else may enter."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)  # never follows a link planted at the path
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise PermissionError(
            f"{root} is not a directory of this user (another user made it?): remove it"
        )
    if info.st_mode & 0o077:
        os.chmod(root, 0o700)  # ours: close it
    return root


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.placeholders: list[str] = []  # created by this run dir
        self.claimed: list[str] = []  # placeholders in use, ours or a live neighbour's

    @property
    def bridge_dir(self) -> Path:
        return self.path / "b"

    @property
    def empty_file(self) -> Path:
        return self.path / "empty"

    @property
    def empty_dir(self) -> Path:
        return self.path / "empty.d"

    @property
    def profile(self) -> Path:
        """The firejail profile the process runs under (written by `firejail.command`)."""
        return self.path / "firejail.profile"

    @classmethod
    def create(cls) -> RunDir:
        root = private_root(run_root())
        sweep(root)
        path = root / secrets.token_hex(4)  # short: unix socket paths are limited to 108 bytes
        path.mkdir(mode=0o700)
        run = cls(path)
        run.bridge_dir.mkdir()
        run.empty_dir.mkdir(mode=0o555)
        run.empty_file.touch(mode=0o444)
        run._save()
        return run

    def place(self, paths: tuple[Path, ...]) -> None:
        """Create an empty placeholder at each missing path (its parents too, if missing), so
        the backend can mount it read-only."""
        in_use = live_placeholders(self.path.parent, exclude=self.path)
        for path in paths:
            if os.path.lexists(path):
                if str(path) in in_use:
                    self.claimed.append(str(path))
                continue
            missing = [p for p in (*reversed(path.parents), path) if not os.path.lexists(p)]
            try:
                for p in missing[:-1]:
                    p.mkdir()
                entry = placeholder_for(path)
                if entry is not None and entry.kind == "dir":
                    path.mkdir()
                else:
                    path.write_text(entry.content if entry else "")
            except OSError:
                continue  # a read-only tree needs no placeholder: nothing can be created there
            # innermost first, so removal empties children before their parents
            self.placeholders += [str(p) for p in reversed(missing)]
        self.claimed += self.placeholders
        self._save()

    def _save(self) -> None:
        manifest = {
            "pid": os.getpid(),
            "start": _start_time(os.getpid()),
            "placeholders": self.placeholders,
            "claimed": self.claimed,
        }
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(manifest))
        tmp.replace(self.path / "manifest.json")

    def remove(self) -> None:
        """Delete the run dir and the placeholders no live neighbour uses."""
        in_use = live_placeholders(self.path.parent, exclude=self.path)
        remove_placeholders(self.placeholders, in_use)
        shutil.rmtree(self.path, ignore_errors=True)


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest: dict[str, Any] = json.loads((path / "manifest.json").read_text())
        return manifest
    except (OSError, ValueError):
        return None


def _alive(manifest: dict[str, Any]) -> bool:
    pid = int(manifest.get("pid", 0))
    return pid > 0 and _start_time(pid) == manifest.get("start")


def live_placeholders(root: Path, exclude: Path | None = None) -> set[str]:
    found: set[str] = set()
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            manifest = _manifest(entry)
            if entry != exclude and manifest and _alive(manifest):
                found.update(manifest.get("claimed", []))
    return found


def remove_placeholders(paths: list[str], in_use: set[str]) -> None:
    """Remove each placeholder still as it was made (never a file or dir someone has since
    filled), innermost first."""
    for name in sorted(paths, key=lambda n: -len(Path(n).parts)):
        if name in in_use:
            continue
        path = Path(name)
        entry = placeholder_for(path)
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only if empty
            elif path.is_file() and path.read_text() == (entry.content if entry else ""):
                path.unlink()


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the run dirs (and their placeholders) of owners that are gone, and the legacy
    ``omnikernel-bridge-*`` dirs nobody listens on. Returns what was removed."""
    root = root or run_root()
    removed: list[Path] = []
    in_use = live_placeholders(root)
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            manifest = _manifest(entry)
            if manifest is None:
                # being created right now, or broken: leave it for an hour
                with contextlib.suppress(OSError):
                    if time.time() - entry.stat().st_mtime < 3600:
                        continue
            elif _alive(manifest):
                continue
            else:
                remove_placeholders(manifest.get("placeholders", []), in_use)
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    removed += _sweep_legacy_bridges(root.parent)
    return removed


def _sweep_legacy_bridges(tmp: Path) -> list[Path]:
    from omnikernel.sandbox.exposed import listening_sockets

    listening = set(listening_sockets())
    removed = []
    for entry in tmp.glob("omnikernel-bridge-*"):
        with contextlib.suppress(OSError):
            if entry.is_dir() and not any(p in listening for p in entry.iterdir()):
                shutil.rmtree(entry)
                removed.append(entry)
    return removed
