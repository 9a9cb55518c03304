"""What a sandbox must enforce, independent of the backend that enforces it.

Invariants of every spec (both backends render the same `plan`):

- reads: system trees are readable read-only; home directories (`/home`, `/root`, the kernel's
  ``$HOME``) and ``/tmp`` appear empty except for the paths the spec opens: the working
  directory, the harness's own private dirs, the agent CLI's install and interpreter, the
  directories on its PATH, and the paths the user allows. Files only root may read (``/etc/shadow``,
  ...), listening unix sockets, Jupyter's runtime and data dirs (kernel connection files, server
  tokens, the session store, other sessions' harness state) and home secrets are masked even
  where an opened directory contains them;
- writes: only the working directory and the private dirs; inside each, the `PROTECTED` entries
  (through which a host program runs code or grants access) stay read-only, including those
  that do not exist yet: the launcher puts an empty placeholder there first, so they cannot be
  created either. Each protected path, and each parent of one, is a mount point, so it cannot be
  renamed or deleted either;
- the process gets exactly `env` and no network but the bridged loopback ports.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir

from omnikernel.sandbox.upstream import DIRECT, EgressRoutes

if TYPE_CHECKING:
    from omnikernel.sandbox.broker_setup import BrokerSetup

#: Home-directory secrets no agent reads, even where the home itself is opened (a notebook
#: folder that is the home directory).
HOME_SECRETS = (
    ".ssh", ".aws", ".config", ".azure", ".netrc", ".docker", ".kube", ".gnupg",
    ".git-credentials", ".npmrc", ".pypirc", ".password-store", ".env", ".local/share/keyrings",
    ".cargo/credentials", ".cargo/credentials.toml", ".m2/settings.xml", ".gradle/gradle.properties",
    # agent CLIs' own logins and conversations
    ".claude", ".claude.json", ".codex", ".pi", ".gemini", ".cursor",
    # shell and REPL histories
    ".bash_history", ".zsh_history", ".python_history", ".node_repl_history", ".psql_history",
    ".lesshst", ".viminfo", ".mysql_history", ".sqlite_history",
)  # fmt: skip

#: Folders a notebook's folder must not contain: the agent could rewrite the system.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/lib", "/boot", "/var")

#: The project's own policy files (issue 9's policy engine reads them beside the notebook):
#: the agent must not loosen the rules it runs under.
POLICY_PATHS = (".omnikernel",)


@dataclasses.dataclass(frozen=True)
class Protected:
    """One entry of the mandatory read-only list, relative to a writable directory."""

    name: str
    kind: str  # "file" or "dir": what an empty placeholder for a missing entry is
    why: str
    #: Host programs read it from a home directory only: elsewhere an existing one is
    #: read-only but a missing one is not blocked (no empty ``.bashrc`` in every project).
    home_only: bool = False
    #: A missing one is blocked with a placeholder. False where a new file needs the user's
    #: own action before anything runs, and a placeholder would show in `git status`.
    block_creation: bool = True
    #: What a placeholder file holds (empty, unless an empty file would break its reader).
    content: str = ""


_SHELL = "a login or interactive shell on the host runs it"

#: Everything through which a host program later runs code or grants access. Read-only in
#: every writable directory of the sandbox, and not creatable where missing.
PROTECTED = (
    Protected(".git/config", "file", "git runs core.fsmonitor, core.sshCommand, aliases, "
              "filters and credential helpers from it on the next `git status` on the host"),
    Protected(".git/hooks", "dir", "git runs hooks on the host (commit, checkout, merge)"),
    Protected(".git/modules", "dir", "submodules' own config and hooks live there"),
    Protected(".git/commondir", "file", "names the directory git reads the repository's config "
              "from: a new one points git at a config the agent wrote (the placeholder, "
              "`.`, names the repository itself)", content=".\n"),
    Protected(".git/info", "dir", "per-repository attributes and excludes: can switch on "
              "filters the host's git then runs"),
    Protected(".gitmodules", "file", "submodule URLs and paths the host's git fetches (a new "
              "one does nothing until the user runs `git submodule update`)",
              block_creation=False),
    Protected(".vscode", "dir", "VS Code runs tasks on folder open and loads workspace settings "
              "(terminal profiles, interpreters)"),
    Protected(".idea", "dir", "JetBrains IDEs run configured tools and startup tasks"),
    Protected(".envrc", "file", "direnv sources it in the user's shell on `cd` (a new or "
              "changed one waits for `direnv allow`)", block_creation=False),
    *(Protected(p, "dir", "the notebook's policy: an agent must not loosen its own rules")
      for p in POLICY_PATHS),
    Protected(".gemini", "dir", "Gemini CLI's project settings, policies, hooks and MCP "
              "servers: the kernel trusts the notebook's folder to Gemini CLI (it connects MCP "
              "servers only there), so an agent writing them would approve its own actions"),
    Protected(".bashrc", "file", _SHELL, True),
    Protected(".bash_profile", "file", _SHELL, True),
    Protected(".bash_login", "file", _SHELL, True),
    Protected(".bash_logout", "file", _SHELL, True),
    Protected(".profile", "file", _SHELL, True),
    Protected(".zshrc", "file", _SHELL, True),
    Protected(".zshenv", "file", _SHELL, True),
    Protected(".zprofile", "file", _SHELL, True),
    Protected(".zlogin", "file", _SHELL, True),
    Protected(".inputrc", "file", "readline key bindings can run commands", True),
    Protected(".ssh", "dir", "authorized_keys grants logins; config runs ProxyCommand", True),
    Protected(".gnupg", "dir", "keys and trust; gpg.conf can run programs", True),
    Protected(".gitconfig", "file", "the global git config: same as .git/config, everywhere",
              True),
    Protected(".config", "dir", "XDG config: git, systemd user units, autostart, fish, "
              "every tool's settings and credentials", True),
    Protected(".ipython", "dir", "IPython runs profile_*/startup/*.py in every new kernel",
              True),
    Protected(".jupyter", "dir", "Jupyter config files are Python run by every server and "
              "kernel", True),
    Protected(".local", "dir", "kernelspecs (share/jupyter/kernels), user site-packages and "
              ".pth files, ~/.local/bin on PATH", True),
    Protected(".pam_environment", "file", "sets the environment of the next login", True),
    Protected(".npmrc", "file", "npm runs scripts and uses registries named there", True),
    Protected(".pypirc", "file", "upload credentials and repositories", True),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SandboxSpec:
    workdir: Path
    env: dict[str, str]
    #: More writable directories (the harness's private HOME, config dir and TMPDIR).
    writable: tuple[Path, ...] = ()
    #: Paths that must not be readable inside (they appear empty or are refused).
    hidden: tuple[Path, ...] = ()
    #: Paths inside writable directories that stay read-only (`protected_in`); missing ones
    #: get an empty placeholder (a file, or a dir if the path ends in "/").
    read_only: tuple[Path, ...] = ()
    #: Directories inside writable ones that must stay where they are (parents of protected
    #: paths, e.g. ``.git``): mounted on themselves so they cannot be renamed away.
    pinned: tuple[Path, ...] = ()
    #: Paths the process must be able to read inside the closed trees (the agent CLI's
    #: install, its interpreter, PATH entries, what the user allows).
    readable: tuple[Path, ...] = ()
    #: Trees that appear empty but for the paths opened above (/tmp always does).
    closed: tuple[Path, ...] = dataclasses.field(default_factory=lambda: home_dirs())
    #: Loopback TCP ports reachable inside, each bridged to the same port on the host, or to
    #: the unix socket `bridge_targets` names for it.
    bridged_ports: tuple[int, ...] = ()
    #: Host unix sockets bridged ports lead to instead (the model gateway's), by port.
    bridge_targets: dict[int, Path] = dataclasses.field(default_factory=dict)
    #: Where the bridge's unix sockets live; default: a per-process dir the launcher removes.
    bridge_dir: Path | None = None
    #: Hosts the user trusts (``host``, ``host:port``, ``*.domain``), reached through the
    #: kernel's egress proxy without asking; any other host only as `network_ask` decides.
    allow_hosts: tuple[str, ...] = ()
    #: How the egress proxy opens upstream connections (``egress_resolve``, ``egress_ca``).
    egress_routes: EgressRoutes = DIRECT
    #: Hosts whose TLS the egress proxy terminates to add the user's credential
    #: (`omnikernel.sandbox.broker`); they are allowed hosts too.
    broker: BrokerSetup | None = None
    #: Files shown in place of others, read-only: (file, where it appears). The session CA's
    #: bundle over the system's CA bundle.
    overlays: tuple[tuple[Path, Path], ...] = ()
    #: Asked by the egress proxy about each connection to a host `allow_hosts` does not cover
    #: (the session's network ask); None: such connections are refused.
    network_ask: Callable[[str, int, bool], Awaitable[str | None]] | None = dataclasses.field(
        default=None, compare=False
    )
    memory_bytes: int | None = 8 * 1024**3
    pids_max: int | None = 1024


def home_dirs(env_home: str | None = None) -> tuple[Path, ...]:
    """Every home directory that must appear closed: ``/home``, ``/root``, the kernel's
    ``$HOME`` and the account's home from the password database."""
    found = [Path("/home"), Path("/root")]
    for candidate in (env_home or os.path.expanduser("~"), _passwd_home()):
        if candidate and os.path.isabs(candidate):
            found.append(Path(os.path.realpath(candidate)))
    return _outermost(found)


def _passwd_home() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""


def is_home(path: Path, homes: Iterable[Path]) -> bool:
    """A home directory itself: one of `homes` that is not a container of homes (``/home``),
    or a direct child of ``/home``."""
    path = Path(os.path.realpath(path))
    return path.parent == Path("/home") or any(path == h and h != Path("/home") for h in homes)


def protected_in(directory: Path, home: bool = False) -> tuple[Path, ...]:
    """The mandatory read-only paths inside writable `directory`: every `PROTECTED` entry that
    exists, and the missing ones whose creation must be blocked (placeholders go there). A
    ``.git`` file (a worktree's or submodule's pointer to its git dir) is protected whole."""
    found = [directory / ".git"] if (directory / ".git").is_file() else []
    for entry in PROTECTED:
        path = Path(directory / entry.name)
        blocked = entry.block_creation and (home or not entry.home_only)
        if blocked or os.path.lexists(path):
            found.append(path)
    return tuple(found)


def placeholder_for(path: Path) -> Protected | None:
    """The `PROTECTED` entry `path` is an instance of, if any."""
    for entry in PROTECTED:
        if path.as_posix().endswith("/" + entry.name):
            return entry
    return None


def pins_for(read_only: Iterable[Path], writable: Iterable[Path]) -> tuple[Path, ...]:
    """The directories between each protected path and its writable root (e.g. ``.git``)."""
    roots = [Path(w) for w in writable]
    pins: dict[Path, None] = {}
    for path in read_only:
        for root in roots:
            if path.is_relative_to(root):
                parent = path.parent
                while parent != root and parent.is_relative_to(root):
                    pins[parent] = None
                    parent = parent.parent
    return tuple(sorted(pins, key=lambda p: len(p.parts)))


def jupyter_private_dirs() -> tuple[Path, ...]:
    """Jupyter's runtime dir (kernel connection files and server tokens: code execution in the
    user's kernels) and its data dir (the session store, every session's harness state,
    kernelspecs)."""
    return (Path(jupyter_runtime_dir()), Path(jupyter_data_dir()))


def default_hidden(home: Path | None = None, runtime_dir: Path | None = None) -> tuple[Path, ...]:
    """The secrets to mask: those under `home`, and Jupyter's runtime and data dirs."""
    home = home or Path(os.path.expanduser("~"))
    jupyter = (runtime_dir,) if runtime_dir else jupyter_private_dirs()
    return tuple(home / name for name in HOME_SECRETS) + tuple(jupyter)


def install_root(binary: str) -> Path:
    """The directory tree an agent CLI needs to run: its ``node_modules`` root for npm
    installs (the entry script loads packages beside it), else its own directory."""
    real = Path(os.path.realpath(binary))
    roots = [p for p in real.parents if p.name == "node_modules"]
    return roots[-1] if roots else real.parent


def interpreter_root(binary: str, path_env: str) -> Path | None:
    """The install of the interpreter a script's shebang names (``#!/usr/bin/env node`` found
    on `path_env`, as the kernel would run it), e.g. ``~/.nvm/versions/node/v22``."""
    try:
        with open(binary, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    program = words[0]
    if os.path.basename(program) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        found = shutil.which(names[0], path=path_env) if names else None
        if found is None:
            return None
        program = found
    real = Path(os.path.realpath(program))
    return real.parent.parent if real.parent.name == "bin" else real.parent


def cli_readable(binary: str, path_env: str) -> tuple[Path, ...]:
    """What an agent CLI and the commands it runs need to read inside a closed home: its
    install, its interpreter's install, and for each directory on the PATH it gets: the
    directory, the tool install it belongs to (``~/.pyenv`` for ``~/.pyenv/shims``,
    ``~/.nvm/versions/node/v22`` for its ``bin``) and the installs its symlinks point into
    (pipx, uv and npm globals in ``~/.local/bin``)."""
    found = [install_root(binary)]
    if (interpreter := interpreter_root(binary, path_env)) is not None:
        found.append(interpreter)
    homes = home_dirs()
    for entry in path_env.split(os.pathsep):
        if not entry or not os.path.isabs(entry) or not os.path.isdir(entry):
            continue
        directory = Path(os.path.realpath(entry))
        if not any(directory.is_relative_to(h) for h in homes):
            continue
        found.append(directory)
        parent = directory.parent
        if (
            directory.name in ("bin", "shims")
            and parent.name != ".local"
            and not is_home(parent, homes)
        ):
            found.append(parent)
        with os.scandir(directory) as entries:
            for item in entries:
                if item.is_symlink():
                    target = os.path.realpath(item.path)
                    if any(Path(target).is_relative_to(h) for h in homes):
                        found.append(_tool_root(Path(target)))
    return tuple(dict.fromkeys(found))


def command_readable(command: str, args: Iterable[str], path_env: str) -> tuple[Path, ...]:
    """What a program the CLI starts inside the sandbox (a stdio MCP server from mcp.toml)
    needs to read in a closed tree (a home, /tmp): the install its command belongs to, as
    found on `path_env` and as its symlinks resolve (a virtual environment's root and the
    interpreter's own), its shebang's interpreter, and the files its absolute arguments name
    (the server's script). The user named them in mcp.toml, a file the agent cannot write;
    home secrets stay masked whatever is opened."""
    found = shutil.which(command, path=path_env) if command else None
    if found is None:
        return ()
    roots = [_tool_root(Path(os.path.abspath(found))), _tool_root(Path(os.path.realpath(found)))]
    if (interpreter := interpreter_root(found, path_env)) is not None:
        roots.append(interpreter)
    roots += [Path(a) for a in args if os.path.isabs(a) and os.path.isfile(a)]
    return tuple(dict.fromkeys(roots))


def _tool_root(real: Path) -> Path:
    """The install a resolved executable belongs to: its ``node_modules`` root, a virtual
    environment (the parent of its ``bin``), or its own directory."""
    roots = [p for p in real.parents if p.name == "node_modules"]
    if roots:
        return roots[-1]
    return real.parent.parent if real.parent.name == "bin" else real.parent


def git_dirs_of(workdir: Path) -> tuple[Path, ...]:
    """The git dir a ``.git`` file points to (a worktree or submodule checkout) and its common
    dir, so git works in the folder: readable, not writable (they lie outside it)."""
    pointer = workdir / ".git"
    try:
        text = pointer.read_text() if pointer.is_file() else ""
    except OSError:
        return ()
    if not text.startswith("gitdir:"):
        return ()
    gitdir = (workdir / text.removeprefix("gitdir:").strip()).resolve()
    found = [gitdir]
    try:
        found.append((gitdir / (gitdir / "commondir").read_text().strip()).resolve())
    except OSError:
        pass
    return tuple(found)


def existing(paths: Iterable[Path]) -> list[Path]:
    return [p for p in paths if os.path.lexists(p)]


def _outermost(paths: Iterable[Path]) -> tuple[Path, ...]:
    unique = sorted(set(paths), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for p in unique:
        if not any(p.is_relative_to(k) for k in kept):
            kept.append(p)
    return tuple(kept)


# -- the plan both backends render -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mount:
    """One step of a `plan`: "empty" (a tree shown empty, read-only but for what is opened
    inside it; /tmp stays writable), "ro" (a read-only view), "rw" (a writable view), "pin" (a
    writable dir mounted on itself so it cannot be renamed), "protect" (read-only inside a
    writable dir), "mask" (hidden: an empty read-only dir or file, or refused)."""

    kind: str
    path: Path


ORDER = {"empty": 0, "ro": 1, "rw": 2, "pin": 3, "protect": 4, "mask": 5}


def plan(spec: SandboxSpec, masked_extra: Iterable[Path] = ()) -> list[Mount]:
    """The mounts that realise `spec`, outermost first (a parent before what lies inside it),
    so a later mount refines an earlier one: a mask over a directory hides it, and a path the
    spec opens inside it (the harness's own state dir inside Jupyter's data dir) is bound back
    on top. Masks nothing makes visible are left out."""
    closed = _outermost([*spec.closed, Path("/tmp")])
    opened_rw = [Path(p) for p in (spec.workdir, *spec.writable)]
    opened_ro = [Path(p) for p in existing(spec.readable) if _inside_any(Path(p), closed)]
    opened = opened_ro + opened_rw
    mounts = [Mount("empty", p) for p in closed]
    mounts += [Mount("ro", p) for p in opened_ro]
    mounts += [Mount("rw", p) for p in opened_rw]
    mounts += [Mount("pin", p) for p in existing(spec.pinned)]
    mounts += [Mount("protect", p) for p in existing(spec.read_only)]
    for path in dict.fromkeys(existing([*spec.hidden, *masked_extra])):
        if (
            _inside_any(path, closed)
            and not _inside_any(path, opened)
            and not any(within(o, path) for o in opened)
        ):
            continue  # nothing opens it: already invisible
        mounts.append(Mount("mask", path))
    ordered = sorted(mounts, key=lambda m: (len(m.path.parts), ORDER[m.kind]))
    return [m for m in ordered if not (m.kind == "mask" and _hidden_by_outer_mask(m, ordered))]


def _hidden_by_outer_mask(mask: Mount, mounts: list[Mount]) -> bool:
    """True if the innermost mount strictly enclosing `mask` is another mask: that one hides
    it already (and an empty read-only dir has no mount point for it)."""
    enclosing = [m for m in mounts if m.path != mask.path and within(mask.path, m.path)]
    if not enclosing:
        return False
    innermost = max(enclosing, key=lambda m: (len(m.path.parts), ORDER[m.kind]))
    return innermost.kind == "mask"


def opened_inside(mount: Mount, mounts: Iterable[Mount]) -> list[Path]:
    """Paths opened (ro, rw) strictly inside `mount`'s path."""
    return [
        m.path
        for m in mounts
        if m.kind in ("ro", "rw") and m.path != mount.path and within(m.path, mount.path)
    ]


def _inside_any(path: Path, roots: Iterable[Path]) -> bool:
    return any(within(path, r) for r in roots)


def within(path: Path, root: Path) -> bool:
    """`path.is_relative_to(root)` (lexical) without its cost: Python 3.11's builds a relative
    path and catches an exception per call, and a plan makes thousands (a third of a start)."""
    return path.parts[: len(root.parts)] == root.parts


def for_agent(
    *,
    workdir: Path,
    env: dict[str, str],
    argv0: str,
    private: tuple[Path, ...],
    readable: tuple[Path, ...] = (),
    hidden: tuple[Path, ...] = (),
    bridged_ports: tuple[int, ...] = (),
    bridge_targets: dict[int, Path] | None = None,
    allow_hosts: tuple[str, ...] = (),
    egress_routes: EgressRoutes = DIRECT,
    broker: BrokerSetup | None = None,
    network_ask: Callable[[str, int, bool], Awaitable[str | None]] | None = None,
    read_only_files: tuple[Path, ...] = (),
) -> SandboxSpec:
    """The spec every agent CLI runs under: the notebook's folder and its `private` dirs
    writable, the protected paths read-only (all of them if the folder is a home directory),
    homes closed but for the CLI's install, interpreter and PATH and the user's `readable`
    paths; home secrets, Jupyter's dirs and `hidden` (the session store, the other sessions'
    state) masked; `read_only_files` (the open notebook) read-only and pinned in place."""
    if any(Path(system).is_relative_to(workdir) for system in SYSTEM_TREES):
        raise ValueError(
            f"The notebook's folder {workdir} holds system directories ({', '.join(SYSTEM_TREES)}), "
            "and an agent may write everything in it: start Jupyter in a project folder."
        )
    homes = home_dirs()
    # The folder itself, and every home directory inside it (a folder that is /home).
    inner_homes = {h for h in homes if h.is_relative_to(workdir) and h != Path("/home")}
    if Path("/home").is_relative_to(workdir):
        inner_homes |= {p for p in Path("/home").iterdir() if p.is_dir()}
    workdir_is_home = is_home(workdir, homes)
    read_only = protected_in(workdir, home=workdir_is_home)
    read_only += tuple(f for f in read_only_files if f.is_file() and f not in read_only)
    for home in sorted(inner_homes - {workdir}):
        read_only += protected_in(home, home=True)
    # A project's own `.env` is the project's; a home's secrets are the user's.
    secret_roots = {Path(os.path.expanduser("~")), *inner_homes}
    if workdir_is_home:
        secret_roots.add(workdir)
    secrets = tuple(h / name for h in secret_roots for name in HOME_SECRETS)
    return SandboxSpec(
        workdir=workdir,
        env=env,
        writable=private,
        hidden=(*secrets, *jupyter_private_dirs(), *hidden),
        read_only=read_only,
        pinned=pins_for(read_only, (workdir,)),
        readable=(*cli_readable(argv0, env.get("PATH", "")), *git_dirs_of(workdir), *readable),
        closed=homes,
        bridged_ports=bridged_ports,
        bridge_targets=dict(bridge_targets or {}),
        allow_hosts=allow_hosts,
        egress_routes=egress_routes,
        broker=broker,
        network_ask=network_ask,
    )


REFUSALS = ("Read-only file system", "Device or resource busy", "Permission denied")


def explain_refusal(output: str) -> str | None:
    """What to tell the user when a tool's output shows the sandbox refused a write (the
    kernel's own error says only "Read-only file system" or "Device or resource busy")."""
    if not any(r in output for r in REFUSALS):
        return None
    for entry in sorted(PROTECTED, key=lambda e: -len(e.name)):
        if entry.name in output:
            return (
                f"The sandbox keeps `{entry.name}` read-only: {entry.why}. Make that change "
                "yourself, outside the sandbox, if you want it."
            )
    if "Device or resource busy" in output:
        return (
            "The sandbox keeps protected paths and the folders holding them (such as "
            "`.git`) in place: they cannot be moved, replaced or deleted."
        )
    if "Read-only file system" in output:
        return (
            "The sandbox lets agents write only the notebook's folder and their private "
            "dirs; everything else is read-only."
        )
    return None
