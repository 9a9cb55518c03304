"""The firejail backend (setuid): seccomp, no capabilities, no network, read-only root.

firejail refuses a command line of 128 arguments or more, and a plan has one entry per opened
path, protected path and mask (issue 28: a notebook on a machine in use for a while passed 200),
so the plan is written to a profile file in the run dir (`profile`) and the command line is
fixed: ``firejail --quiet --profile=FILE -- AGENT...``. Given a file path, ``--profile`` reads
that file only: firejail's default profile (and through it ``globals.local``, the ``*.local``
files and ``~/.config/firejail``) is read only when no profile is named, and other profiles
only through ``include`` lines, of which ours has none (``--noprofile`` and ``--profile`` are
mutually exclusive, so it is not given). Only ``/etc/firejail/firejail.config`` still applies.

`--deterministic-shutdown` makes firejail kill the whole sandbox when the agent exits, instead
of waiting for orphans. `--cwd` is refused, so the caller starts firejail in the working
directory. firejail closes a tree by whitelisting: whitelisting anything under the user's home
or /tmp turns that tree into an empty tmpfs holding only the whitelisted paths (other users'
homes are hidden by default), so /tmp is always private here too. Other trees are closed, and
masks over directories that contain an opened path are applied, by blacklisting their other
entries: one glob line per directory on the way (``noblacklist`` the branch that leads to the
opened path, then ``blacklist DIR/*``), expanded inside the sandbox at its start, so siblings
cost no line however many there are. ``read-only P`` then ``read-write P`` mounts P on itself:
it can no longer be renamed.

How firejail reads a path in a profile line (0.9.72, ``profile.c``, ``util.c``): everything
from a ``#`` on is a comment; runs of spaces and tabs become one space and a trailing one is
dropped; control characters, ``\\ & ! " < > % ^ { } ; ,`` and ``..`` are refused; and the path
is a glob pattern (``* ? [``; a whitelisted path is first taken as it is, then globbed, and what
the glob finds is checked for ``..`` again). `exact` escapes what can be escaped (``[*]``, ``[ ]``, ``.[.]``)
and refuses the rest (`UnnamablePath`): the line could name another path, or a newline could
start a line of its own. A mask may name more than its path (`loose`: a ``?`` stands for each
character firejail cannot take), since hiding a similarly named neighbour too is safe.
"""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

from omnikernel.sandbox.rundir import RunDir
from omnikernel.sandbox.spec import Mount, opened_inside, within

name = "firejail"
binary = "firejail"
install = "apt-get install -y --no-install-recommends firejail"

#: What firejail refuses in a path, or its profile reader cuts at (``#``).
REFUSED = frozenset('\\&!"<>%^{};,#')
#: firejail reads a profile line into 8,192 bytes: a longer one would go on as a line of its own.
MAX_PATH_BYTES = 4096

#: The sandbox's fixed options, in their profile spellings.
OPTIONS = (
    "caps.drop all", "seccomp", "restrict-namespaces", "nonewprivs", "private-dev",
    "deterministic-shutdown", "deterministic-exit-code",
)  # fmt: skip


class UnnamablePath(ValueError):
    """A path the sandbox must open that a firejail profile line cannot name exactly."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"firejail cannot name {str(path)!r} in its profile: {why}")
        self.path = path
        self.why = why


def _home() -> Path:
    return Path(os.path.realpath(pwd.getpwuid(os.getuid()).pw_dir))


def _whitelistable(path: Path) -> bool:
    return path.is_relative_to(_home()) or path.is_relative_to("/tmp")


def _refused(char: str) -> bool:
    return char in REFUSED or ord(char) < 32 or ord(char) == 127


def _pattern(text: str, refused: str | None) -> str:
    """`text` as a glob pattern that firejail's line reader keeps, matching only `text` (each
    character firejail refuses becomes `refused`, when given, else stays and is refused)."""
    out = "".join(
        refused if refused is not None and _refused(c) else f"[{c}]" if c in "*?[" else c
        for c in text
    )
    out = out.replace("..", ".[.]")
    return re.sub(r" (?= |$)", "[ ]", out)  # a space before a space, or at the end


def _checked_length(path: Path, pattern: str) -> str:
    if len(os.fsencode(pattern)) > MAX_PATH_BYTES:
        raise UnnamablePath(path, f"it is longer than {MAX_PATH_BYTES} bytes")
    return pattern


def exact(path: Path, whitelist: bool = False) -> str:
    """`path` in a profile line that names it and nothing else, or `UnnamablePath`. (A
    whitelist pattern is expanded into a line of its own, which firejail checks again for
    "..".)"""
    text = str(path)
    bad = next((c for c in text if _refused(c)), None)
    if bad is not None:
        what = "a newline" if bad == "\n" else f"the character {bad!r}"
        raise UnnamablePath(path, f"firejail refuses {what} in a path")
    if whitelist and ".." in text:
        raise UnnamablePath(path, 'firejail refuses ".." in a path it whitelists')
    return _checked_length(path, _pattern(text, None))


def loose(path: Path) -> str:
    """A pattern matching `path` (and perhaps similarly named neighbours): what a mask needs."""
    return _checked_length(path, _pattern(str(path), "?"))


def _blacklist_around(path: Path, keep: list[Path]) -> list[str]:
    """Hide every entry of `path` but the branches that lead to `keep`: each branch is spared
    (``noblacklist``) before one glob hides the rest, then the same inside each branch that
    only leads to a kept path. (``noblacklist`` holds for every later line, which is safe: it
    names only paths on the way to opened ones, never a path something else masks.)"""
    branches = list(dict.fromkeys(path / k.parts[len(path.parts)] for k in keep))
    lines = [f"noblacklist {exact(b)}" for b in branches]
    lines.append(f"blacklist {exact(path)}/*")
    for branch in branches:
        if branch not in keep:
            lines += _blacklist_around(branch, [k for k in keep if within(k, branch)])
    return lines


def profile(mounts: list[Mount], run: RunDir) -> list[str]:
    """The profile lines that realise `mounts`: the whole sandbox but ``--quiet``."""
    lines = ["quiet", "net none", "read-only /"]
    home = _home()
    # A whitelisted path cannot be the home itself: a folder that is (or holds) the home opens
    # it, and its masks and protected paths do the rest.
    home_open = any(home.is_relative_to(m.path) for m in mounts if m.kind in ("ro", "rw"))
    # Always one whitelist under /tmp (a private /tmp) and one under the home (a closed home).
    lines.append(f"whitelist {exact(run.bridge_dir, whitelist=True)}")
    if not home_open:
        lines.append(f"whitelist {exact(home / '.omnikernel-sandbox-closed', whitelist=True)}")
    # An opened path that is masked itself stays masked (as under bwrap): it is not spared.
    masked = {m.path for m in mounts if m.kind == "mask"}
    for mount in mounts:
        path = mount.path
        inside = [p for p in opened_inside(mount, mounts) if p not in masked]
        if mount.kind == "empty":
            if path == Path("/tmp") or home.is_relative_to(path) or path.is_relative_to(home):
                continue  # whitelisting closes these
            if path == Path("/home"):
                continue  # other users' homes are hidden by default
            lines += _blacklist_around(path, inside)
        elif mount.kind in ("ro", "rw"):
            if _whitelistable(path) and not (home_open and path.is_relative_to(home)):
                lines.append(f"whitelist {exact(path, whitelist=True)}")
            lines.append(f"read-{'only' if mount.kind == 'ro' else 'write'} {exact(path)}")
        elif mount.kind == "pin":
            lines += [f"read-only {exact(path)}", f"read-write {exact(path)}"]
        elif mount.kind == "protect":
            lines.append(f"read-only {exact(path)}")
        elif mount.kind == "mask":
            lines += _blacklist_around(path, inside) if inside else [f"blacklist {loose(path)}"]
    return [*lines, *OPTIONS]


def command(
    firejail: str,
    argv: list[str],
    workdir: Path,
    mounts: list[Mount],
    run: RunDir,
    overlays: tuple[tuple[Path, Path], ...] = (),
) -> list[str]:
    """Write the profile into the run dir; the command line is the same length whatever the
    plan holds (``--quiet`` there too: it silences what firejail says before reading it).
    `overlays` are not rendered: firejail binds a file over another only for root (its
    ``--bind``), so under firejail the session CA reaches tools through the environment
    variables alone (`session_ca.TRUST_VARIABLES`)."""
    run.profile.write_text("".join(f"{line}\n" for line in profile(mounts, run)))
    return [firejail, "--quiet", f"--profile={run.profile}", "--", *argv]


def cause(said: str, argv: list[str], run: RunDir) -> tuple[str, Path | None]:
    """What firejail's start error `said` blames in our command line (`argv`) or profile, in
    words, and the path it names, if any."""
    if m := re.search(
        r"too long arguments: argv\[(\d+)\] len \((\d+)\) >= MAX_ARG_LEN \((\d+)\)", said
    ):
        index, length, limit = (int(g) for g in m.groups())
        before = argv[index - 1] if 0 < index <= len(argv) else ""
        what = f"the value of `{before}`" if before.startswith("-") else f"argument {index}"
        return (
            f"In the agent's command line, {what} is {length} characters long; firejail "
            f"takes at most {limit - 1}.",
            None,
        )
    if "too many arguments" in said:
        return "The agent's command line has more arguments than firejail takes.", None
    if "too many environment variables" in said:
        return "The agent's environment has more variables than firejail takes.", None
    if m := re.search(r"line (\d+) in (.+?) is invalid", said):
        try:
            line = Path(m.group(2)).read_text().splitlines()[int(m.group(1)) - 1]
        except (OSError, IndexError, ValueError):
            return "", None
        words = line.split(" ", 1)
        path = Path(words[1]) if len(words) == 2 and words[1].startswith("/") else None
        return f"It refused the profile line `{line}`.", path
    if m := re.search(r'"(/[^"]*)" is an invalid filename', said):
        return "", Path(m.group(1))
    return "", None
