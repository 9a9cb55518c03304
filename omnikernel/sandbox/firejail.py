"""The firejail backend (setuid): seccomp, no capabilities, no network, read-only root.

`--deterministic-shutdown` makes firejail kill the whole sandbox when the agent exits, instead
of waiting for orphans. `--cwd` is refused, so the caller starts firejail in the working
directory. Whitelists are only for paths firejail can whitelist (home, /tmp, ...); elsewhere
`--read-write` on the read-only root is enough.
"""

from __future__ import annotations

import os
from pathlib import Path

from .spec import SandboxSpec, existing

name = "firejail"
binary = "firejail"
install = "apt-get install -y --no-install-recommends firejail"


def _whitelistable(path: Path) -> bool:
    home = Path(os.path.expanduser("~"))
    return path.is_relative_to(home) or path.is_relative_to("/tmp")


def command(firejail: str, argv: list[str], spec: SandboxSpec) -> list[str]:
    args = [firejail, "--quiet", "--noprofile", "--net=none", "--read-only=/"]
    for path in existing(spec.readable):
        if _whitelistable(path):
            args.append(f"--whitelist={path}")
    for path in (spec.workdir, *spec.writable):
        if _whitelistable(path):
            args.append(f"--whitelist={path}")
        args.append(f"--read-write={path}")
    args += [f"--read-only={path}" for path in existing(spec.read_only)]
    args += [f"--blacklist={path}" for path in existing(spec.hidden)]
    args += [
        "--caps.drop=all", "--seccomp", "--restrict-namespaces", "--nonewprivs",
        "--private-dev", "--deterministic-shutdown", "--deterministic-exit-code", "--",
    ]  # fmt: skip
    return args + argv
