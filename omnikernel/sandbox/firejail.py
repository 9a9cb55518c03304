"""The firejail backend (setuid): seccomp, no capabilities, no network, read-only root.

`--deterministic-shutdown` makes firejail kill the whole sandbox when the agent exits, instead
of waiting for orphans. `--cwd` is refused, so the caller starts firejail in the working
directory. firejail closes a tree by whitelisting: whitelisting anything under the user's home
or /tmp turns that tree into an empty tmpfs holding only the whitelisted paths (other users'
homes are hidden by default), so /tmp is always private here too. Other trees are closed, and
masks over directories that contain an opened path are applied, by blacklisting their other
entries. ``--read-only=P --read-write=P`` mounts P on itself: it can no longer be renamed.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from .rundir import RunDir
from .spec import Mount, opened_inside

name = "firejail"
binary = "firejail"
install = "apt-get install -y --no-install-recommends firejail"


def _home() -> Path:
    return Path(os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir))


def _whitelistable(path: Path) -> bool:
    return path.is_relative_to(_home()) or path.is_relative_to("/tmp")


def _blacklist_around(path: Path, keep: list[Path]) -> list[str]:
    """Blacklist every entry of `path` but the branches that lead to `keep`."""
    args = []
    try:
        entries = list(path.iterdir())
    except OSError:
        return []
    for entry in entries:
        inner = [k for k in keep if k.is_relative_to(entry)]
        if not inner:
            args.append(f"--blacklist={entry}")
        elif entry not in inner:
            args += _blacklist_around(entry, inner)
    return args


def command(
    firejail: str, argv: list[str], workdir: Path, mounts: list[Mount], run: RunDir
) -> list[str]:
    args = [firejail, "--quiet", "--noprofile", "--net=none", "--read-only=/"]
    home = _home()
    # A whitelisted path cannot be the home itself: a folder that is (or holds) the home opens
    # it, and its masks and protected paths do the rest.
    home_open = any(home.is_relative_to(m.path) for m in mounts if m.kind in ("ro", "rw"))
    # Always one whitelist under /tmp (a private /tmp) and one under the home (a closed home).
    args.append(f"--whitelist={run.bridge_dir}")
    if not home_open:
        args.append(f"--whitelist={home}/.omnikernel-sandbox-closed")
    for mount in mounts:
        path = mount.path
        if mount.kind == "empty":
            if path == Path("/tmp") or home.is_relative_to(path) or path.is_relative_to(home):
                continue  # whitelisting closes these
            if path == Path("/home"):
                continue  # other users' homes are hidden by default
            args += _blacklist_around(path, opened_inside(mount, mounts))
        elif mount.kind in ("ro", "rw"):
            if _whitelistable(path) and not (home_open and path.is_relative_to(home)):
                args.append(f"--whitelist={path}")
            args.append(f"--read-{'only' if mount.kind == 'ro' else 'write'}={path}")
        elif mount.kind == "pin":
            args += [f"--read-only={path}", f"--read-write={path}"]
        elif mount.kind == "protect":
            args.append(f"--read-only={path}")
        elif mount.kind == "mask":
            inside = opened_inside(mount, mounts)
            args += _blacklist_around(path, inside) if inside else [f"--blacklist={path}"]
    args += [
        "--caps.drop=all", "--seccomp", "--restrict-namespaces", "--nonewprivs",
        "--private-dev", "--deterministic-shutdown", "--deterministic-exit-code", "--",
    ]  # fmt: skip
    return args + argv
