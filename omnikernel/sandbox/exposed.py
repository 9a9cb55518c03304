"""What the host exposes to any process of the user that no agent may reach.

- Files only root may read (``/etc/shadow``, ``/etc/sudoers``, host SSH keys, ...): the kernel
  often runs as root in containers and VMs, and a dropped capability set does not stop the
  owner (uid 0) from reading its own 0600 files. Found by their mode: not world-readable.
- Listening unix sockets (tmux, docker, D-Bus, ssh-agent, other sessions' bridges, X11): a
  socket on a read-only mount can still be connected to, and each of these hands out code
  execution or credentials. Found in ``/proc/net/unix``, which lists every bound socket path.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

#: Trees scanned for files only root may read (recursively for /etc, one level for the rest).
ROOT_ONLY_TREES = ("/etc",)
ROOT_ONLY_DIRS = ("/var/log", "/var/lib", "/var/cache", "/var/spool", "/var/backups", "/opt",
                  "/srv", "/boot")  # fmt: skip


@functools.cache
def root_only_files() -> tuple[Path, ...]:
    """Files and directories under the system trees that others may not read (cached: the
    scan of /etc takes a few milliseconds)."""
    found: list[Path] = []
    for tree in ROOT_ONLY_TREES:
        for dirpath, dirnames, filenames in os.walk(tree):
            for name in [*dirnames, *filenames]:
                path = os.path.join(dirpath, name)
                if _private(path):
                    found.append(Path(path))
            dirnames[:] = [d for d in dirnames if not _private(os.path.join(dirpath, d))]
    for directory in ROOT_ONLY_DIRS:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found += [Path(directory, n) for n in names if _private(os.path.join(directory, n))]
    return tuple(found)


def _private(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    if stat.S_ISLNK(mode):
        return False
    needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return (mode & needed) != needed


def listening_sockets(keep: tuple[Path, ...] = ()) -> tuple[Path, ...]:
    """Paths of the unix sockets bound on this host, except those under `keep` (the session's
    own bridge)."""
    found: dict[Path, None] = {}
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return ()
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith("/"):
            path = Path(fields[7])
            if not any(path.is_relative_to(k) for k in keep) and os.path.lexists(path):
                found[path] = None
    return tuple(found)
