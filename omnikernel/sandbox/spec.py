"""What a sandbox must enforce, independent of the backend that enforces it. Pure.

Invariants of every spec: the working directory is writable; the rest of the filesystem is
read-only; secrets in the home directory and Jupyter's runtime directory (kernel connection
files and server tokens: code execution in the user's kernel) are hidden; `.git/hooks` stays
read-only; the process gets exactly `env` and no network but the bridged loopback ports.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

#: Home-directory secrets no agent reads.
HOME_SECRETS = (
    ".ssh", ".aws", ".config/gcloud", ".azure", ".netrc", ".docker", ".kube", ".gnupg",
    ".git-credentials", ".npmrc", ".pypirc", ".config/gh", ".password-store",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    workdir: Path
    env: dict[str, str]
    #: More writable directories (the harness's private HOME, config dir and TMPDIR).
    writable: tuple[Path, ...] = ()
    #: Paths that must not be readable inside (they appear empty or absent).
    hidden: tuple[Path, ...] = ()
    #: Paths inside writable directories that stay read-only.
    read_only: tuple[Path, ...] = ()
    #: Paths the process must be able to read even where the backend hides a whole tree
    #: (the agent CLI's install, if it lives under /tmp).
    readable: tuple[Path, ...] = ()
    #: Loopback TCP ports reachable inside, each bridged to the same port on the host.
    bridged_ports: tuple[int, ...] = ()
    #: Where the bridge's unix sockets live (must be inside a writable directory).
    bridge_dir: Path | None = None
    #: Hosts the user trusts (``host``, ``host:port``, ``*.domain``), reached through the
    #: kernel's egress proxy; everything else stays unreachable.
    allow_hosts: tuple[str, ...] = ()
    memory_bytes: int | None = 8 * 1024**3
    pids_max: int | None = 1024


def default_hidden(home: Path | None = None, runtime_dir: Path | None = None) -> tuple[Path, ...]:
    """The secrets to hide: those under `home` and Jupyter's runtime directory."""
    home = home or Path(os.path.expanduser("~"))
    runtime = runtime_dir or Path(jupyter_runtime_dir())
    return tuple(home / name for name in HOME_SECRETS) + (runtime,)


def protected_in(workdir: Path) -> tuple[Path, ...]:
    """Paths under the working directory an agent must not change (git hooks run code)."""
    return (workdir / ".git" / "hooks",)


def install_root(binary: str) -> Path:
    """The directory tree an agent CLI needs to run: its ``node_modules`` root for npm
    installs (the entry script loads packages beside it), else its own directory."""
    real = Path(os.path.realpath(binary))
    roots = [p for p in real.parents if p.name == "node_modules"]
    return roots[-1] if roots else real.parent


def existing(paths: tuple[Path, ...]) -> list[Path]:
    return [p for p in paths if os.path.lexists(p)]
