"""The bubblewrap backend: namespaces with every capability dropped.

As root, bwrap without ``--cap-drop ALL`` leaves the sandbox able to remount ``/`` read-write,
so the drop is not optional. The root is bound read-only; closed trees (homes, /tmp) become
empty tmpfs mounts, read-only but /tmp, with the opened paths bound back inside; masks are an
empty read-only dir or file from the run dir (a tmpfs, made read-only at the end, where
something opened lies inside). A bind target must not have to be created on the read-only
root, which is why placeholders for missing protected paths exist before the start.
"""

from __future__ import annotations

import os
from pathlib import Path

from omnikernel.sandbox.rundir import RunDir
from omnikernel.sandbox.spec import Mount, opened_inside

name = "bwrap"
binary = "bwrap"
install = "apt-get install -y --no-install-recommends bubblewrap"


def command(
    bwrap: str,
    argv: list[str],
    workdir: Path,
    mounts: list[Mount],
    run: RunDir,
    overlays: tuple[tuple[Path, Path], ...] = (),
) -> list[str]:
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    read_only_later: list[str] = []
    for mount in mounts:
        path = str(mount.path)
        if mount.kind == "empty":
            args += ["--tmpfs", path]
            if mount.path != Path("/tmp"):
                read_only_later.append(path)
        elif mount.kind == "ro" or mount.kind == "protect":
            args += ["--ro-bind", path, path]
        elif mount.kind in ("rw", "pin"):
            args += ["--bind", path, path]
        elif mount.kind == "mask":
            if not os.path.isdir(mount.path) or os.path.islink(mount.path):
                args += ["--ro-bind", str(run.empty_file), path]
            elif opened_inside(mount, mounts):
                args += ["--tmpfs", path]
                read_only_later.append(path)
            else:
                args += ["--ro-bind", str(run.empty_dir), path]
    opened = {str(m.path) for m in mounts if m.kind in ("ro", "rw")}
    for path in read_only_later:
        if path in opened:
            continue  # the same path is bound on top: remounting would hit that bind
        args += ["--remount-ro", path]
    for source, target in overlays:  # a file shown in another's place (the session CA bundle)
        args += ["--ro-bind", str(source), str(target)]
    args += [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--chdir",
        str(workdir),
        "--",
    ]
    return args + argv
