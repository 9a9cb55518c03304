"""The bubblewrap backend: namespaces with every capability dropped.

As root, bwrap without ``--cap-drop ALL`` leaves the sandbox able to remount ``/`` read-write,
so the drop is not optional. The host's /tmp is replaced by an empty tmpfs; the working
directory and the other writable paths are bound back on top of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .spec import SandboxSpec, existing

name = "bwrap"
binary = "bwrap"
install = "apt-get install -y --no-install-recommends bubblewrap"


def command(bwrap: str, argv: list[str], spec: SandboxSpec) -> list[str]:
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in existing(spec.readable):
        args += ["--ro-bind", str(path), str(path)]
    for path in (spec.workdir, *spec.writable):
        args += ["--bind", str(path), str(path)]
    for path in existing(spec.read_only):
        args += ["--ro-bind", str(path), str(path)]
    for path in existing(spec.hidden):
        if Path(path).is_dir():
            args += ["--tmpfs", str(path)]
        else:
            args += ["--ro-bind", os.devnull, str(path)]
    args += [
        "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        "--chdir", str(spec.workdir), "--",
    ]  # fmt: skip
    return args + argv
