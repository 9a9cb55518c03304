"""Every command a shell line would run, parsed with a real bash grammar (tree-sitter-bash).

Pure. `parse(line)` walks the syntax tree into `Command`s: each simple command anywhere in the
line (pipelines, ``;`` ``&&`` ``||``, subshells, ``$(...)`` and backticks, bodies of ``if``,
loops and functions), after quote removal, with wrappers peeled off (``env``, ``command``,
``exec``, ``nice``, ``timeout``, ``xargs``, ``sudo``, ...), ``sh -c``/``bash -lc`` strings parsed
again, and git's global options (``-C DIR``, ``-c k=v``) and ``-c alias.X=...`` resolved.

What cannot be known from the text gets the most dangerous reading: a word bash would compute
(a variable, ``$(...)``, ``${IFS}``) becomes `UNKNOWN`, which matches any pattern word; a
command whose name is unknown (``$a push``, ``eval``, ``source``, a script the agent wrote,
a shell reading stdin, an unknown git subcommand that may be an alias) is `Command.opaque` and
matches every pattern. A line bash itself may read differently (a parse error) is opaque too.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import posixpath
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

#: A word bash computes at run time: it matches any pattern word.
UNKNOWN = "\x00?"
#: How deep ``sh -c`` strings and aliases are followed before the rest counts as opaque.
MAX_DEPTH = 6

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox"})
#: Commands that run another command given in their arguments; value: options taking a value.
WRAPPERS: dict[str, frozenset[str]] = {
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "exec": frozenset({"-a"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "nohup": frozenset(),
    "setsid": frozenset(),
    "time": frozenset({"-f", "--format", "-o", "--output"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "ionice": frozenset({"-c", "--class", "-n", "--classdata", "-p", "-P", "-u"}),
    "sudo": frozenset(
        {"-u", "--user", "-g", "--group", "-C", "-D", "--chdir", "-h", "-p", "-r", "-t", "-U"}
    ),  # fmt: skip
    "doas": frozenset({"-u", "-C"}),
    "xargs": frozenset(
        {
            "-I",
            "-i",
            "-n",
            "-P",
            "-d",
            "-E",
            "-e",
            "-L",
            "-l",
            "-s",
            "-a",
            "--max-args",
            "--max-procs",
            "--delimiter",
            "--arg-file",
            "--replace",
            "--max-lines",
            "--eof",
        }
    ),  # fmt: skip
    "unbuffer": frozenset(),
    "chronic": frozenset(),
    "flock": frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}),
}
#: Wrappers whose first positional argument is not the command (the timeout's duration, the
#: lock file).
WRAPPER_LEADING_ARGS = {"timeout": 1, "flock": 1}
#: Commands that run code the line does not show.
OPAQUE_NAMES = frozenset({"eval", "source", ".", "exec_script", "trap"})
#: git options before the subcommand; those that take a value.
GIT_VALUE_OPTIONS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace",
                               "--exec-path", "--config-env", "--super-prefix"})  # fmt: skip
#: git's own commands (anything else may be an alias defined in a config we cannot see).
GIT_COMMANDS = frozenset(
    """
add am annotate apply archive bisect blame branch bundle cat-file check-attr check-ignore
check-mailmap check-ref-format checkout checkout-index cherry cherry-pick citool clean clone
column commit commit-graph commit-tree config count-objects credential describe diff diff-files
diff-index diff-tree difftool fast-export fast-import fetch fetch-pack filter-branch
for-each-ref format-patch fsck gc get-tar-commit-id grep gui hash-object help init
instaweb interpret-trailers log ls-files ls-remote ls-tree mailinfo mailsplit maintenance merge
merge-base merge-file merge-tree mergetool mktag mktree mv name-rev notes pack-objects
pack-refs prune pull push range-diff read-tree rebase reflog remote repack replace request-pull
rerere reset restore rev-list rev-parse revert rm send-email send-pack shortlog show
show-branch show-ref sparse-checkout stage stash status submodule switch symbolic-ref tag
update-index update-ref verify-commit verify-pack verify-tag version whatchanged worktree
write-tree lfs
""".split()
)
#: Language runtimes: the code they run is not shell, so the policy cannot read it.
INTERPRETER = re.compile(r"(python[0-9.]*|pypy[0-9.]*|node|nodejs|deno|perl|ruby|php|lua|Rscript)")
#: Directories whose programs are system commands, not scripts the agent wrote.
SYSTEM_DIRS = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/")


@dataclasses.dataclass(frozen=True)
class Command:
    """One simple command as bash would run it: its words after quote removal."""

    argv: tuple[str, ...]
    #: Why what it runs cannot be known from the text ("" if it can).
    opaque: str = ""
    #: The text of the command in the line, for messages.
    source: str = ""

    @property
    def name(self) -> str:
        return self.argv[0] if self.argv else UNKNOWN

    def shown(self) -> str:
        return " ".join("…" if w == UNKNOWN else w for w in self.argv) or self.source


@dataclasses.dataclass(frozen=True)
class ParsedLine:
    commands: tuple[Command, ...]

    @property
    def opaque(self) -> tuple[Command, ...]:
        return tuple(c for c in self.commands if c.opaque)


@functools.cache
def _parser() -> Parser:
    import tree_sitter_bash
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bash.language()))


def parse(line: str) -> ParsedLine:
    """Every command `line` would run (see the module docstring)."""
    return ParsedLine(tuple(_commands(line, 0)))


def _commands(line: str, depth: int) -> Iterator[Command]:
    if depth > MAX_DEPTH:
        yield Command((), "nested too deeply to follow", line)
        return
    tree = _parser().parse(line.encode())
    root = tree.root_node
    if root.has_error:
        yield Command((), "bash may read this line differently (it does not parse cleanly)", line)
    yield from _walk(root, depth)


def _walk(node: Node, depth: int) -> Iterator[Command]:
    if node.type == "command":
        yield from _command(node, depth)
        # Substitutions inside the words run too.
        for child in node.children:
            yield from _inner(child, depth)
        return
    if node.type == "function_definition":
        # The body runs whenever the name is called; count it as running here.
        for child in node.children:
            yield from _walk(child, depth)
        return
    for child in node.children:
        yield from _walk(child, depth)


def _inner(node: Node, depth: int) -> Iterator[Command]:
    """Commands nested inside a word (command and process substitutions)."""
    if node.type in ("command_substitution", "process_substitution"):
        yield from _walk(node, depth)
        return
    for child in node.children:
        yield from _inner(child, depth)


def word_text(node: Node) -> str:
    """The word after quote removal, or `UNKNOWN` when bash computes it at run time."""
    kind = node.type
    text = _source(node)
    if kind == "command_name":
        return word_text(node.children[0]) if node.children else UNKNOWN
    if kind in ("word", "number"):
        if any(c in text for c in "*?[") and not text.startswith("-"):
            return text  # a glob stays as written: patterns compare it literally
        return re.sub(r"\\(.)", r"\1", text.replace("\\\n", ""))
    if kind == "raw_string":
        return text[1:-1]
    if kind == "ansi_c_string":
        try:
            return codecs.decode(text[2:-1], "unicode_escape")
        except UnicodeDecodeError:
            return UNKNOWN
    if kind in ("string", "translated_string"):
        parts = []
        for child in node.children:
            if child.type == '"' or child.type == '$"':
                continue
            if child.type == "string_content":
                parts.append(re.sub(r'\\([\\"$`])', r"\1", _source(child)))
            else:
                return UNKNOWN
        return "".join(parts)
    if kind == "concatenation":
        parts = [word_text(c) for c in node.children]
        return UNKNOWN if UNKNOWN in parts else "".join(parts)
    return UNKNOWN  # expansions, substitutions, arithmetic, brace expressions


def _source(node: Node) -> str:
    """The text of `node` as bash reads it (a node of a parsed line always has its text)."""
    return (node.text or b"").decode(errors="replace")


def _command(node: Node, depth: int) -> Iterator[Command]:
    source = _source(node)
    words = [
        word_text(c)
        for c in node.children
        if c.is_named
        and c.type
        not in (
            "variable_assignment",
            "file_redirect",
            "herestring_redirect",
            "heredoc_redirect",
            "comment",
        )
    ]
    if not words:
        return
    yield from resolve(tuple(words), source, depth)


def resolve(argv: tuple[str, ...], source: str, depth: int = 0) -> Iterator[Command]:
    """Peel wrappers, follow shells and git aliases: the commands `argv` runs."""
    if not argv:
        return
    name = argv[0]
    if name == UNKNOWN:
        yield Command(argv, "its command name is computed when it runs", source)
        return
    if "/" in name:
        if name.startswith(SYSTEM_DIRS):
            name = posixpath.basename(name)
            argv = (name, *argv[1:])
        else:
            yield Command(argv, f"it runs the script {name}, which the line does not show", source)
            return
    if name in OPAQUE_NAMES:
        yield Command(argv, f"`{name}` runs code the line does not show", source)
        return
    if name in WRAPPERS:
        yield Command(argv, "", source)  # the wrapper itself runs too
        inner = _unwrap(name, argv[1:])
        if inner is None:
            return
        if name == "xargs":  # it appends words read from its input
            inner = (*(inner or ("echo",)), UNKNOWN)
        yield from resolve(inner, source, depth)
        return
    if name in SHELLS:
        yield from _shell(argv, source, depth)
        return
    if name == "git":
        yield from _git(argv, source, depth)
        return
    if INTERPRETER.fullmatch(name):
        yield from _interpreter(argv, source, depth)
        return
    yield Command(argv, "", source)
    if name == "find":
        yield from _find_exec(argv, source, depth)
    elif name in ("su", "runuser", "script", "watch") and len(argv) > 1:
        flag = "-c" if name != "watch" else None
        rest = list(argv[1:])
        if flag in rest and rest.index(flag) + 1 < len(rest):
            yield from _commands(rest[rest.index(flag) + 1], depth + 1)
        elif name == "watch":
            words = [w for w in rest if not w.startswith("-")]
            yield from _commands(" ".join(words), depth + 1)


def _find_exec(argv: tuple[str, ...], source: str, depth: int) -> Iterator[Command]:
    """``find ... -exec CMD {} ;`` runs CMD."""
    args = list(argv[1:])
    for i, word in enumerate(args):
        if word in ("-exec", "-execdir", "-ok", "-okdir"):
            inner = []
            for arg in args[i + 1 :]:
                if arg in (";", "+"):
                    break
                inner.append(UNKNOWN if arg == "{}" else arg)
            yield from resolve(tuple(inner), source, depth + 1)


def _interpreter(argv: tuple[str, ...], source: str, depth: int) -> Iterator[Command]:
    """``python -m pip ...`` runs pip; code given with ``-c``/``-e`` or a script is opaque."""
    args = argv[1:]
    for i, word in enumerate(args):
        if word == "-m" and i + 1 < len(args):
            yield Command(argv, "", source)
            yield from resolve(args[i + 1 :], source, depth + 1)
            return
        if word in ("-c", "-e", "--eval", "-p", "--print", "-r") or (
            not word.startswith("-") and word != UNKNOWN
        ):
            yield Command(argv, f"{argv[0]} runs code the policy cannot read", source)
            return
        if word == UNKNOWN:
            yield Command(argv, f"{argv[0]} runs a computed argument", source)
            return
    yield Command(argv, "", source)


def _unwrap(name: str, args: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command a wrapper runs (None: it runs none, e.g. ``command -v git``)."""
    takes_value = WRAPPERS[name]
    leading = WRAPPER_LEADING_ARGS.get(name, 0)
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            i += 1
            break
        if name == "env" and "=" in word and not word.startswith("-"):
            i += 1
            continue
        if word.startswith("-") and len(word) > 1:
            if name == "command" and word in ("-v", "-V"):
                return None
            if name == "env" and word in ("-S", "--split-string") and i + 1 < len(args):
                return tuple(args[i + 1].split()) + args[i + 2 :]
            if word in takes_value:
                i += 2
            else:
                i += 1
            continue
        if name == "nice" and re.fullmatch(r"-\d+", word):
            i += 1
            continue
        break
    rest = args[i:]
    if leading:
        rest = rest[leading:]
    return rest


def _shell(argv: tuple[str, ...], source: str, depth: int) -> Iterator[Command]:
    """``sh -c STRING``: the string is parsed again; a script file or stdin is opaque."""
    args = list(argv[1:])
    if argv[0] == "busybox" and args:
        yield from resolve(tuple(args), source, depth)
        return
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            if "c" in word[1:]:
                if i + 1 >= len(args):
                    yield Command(argv, "`-c` without a command", source)
                    return
                yield Command(argv, "", source)
                script = args[i + 1]
                if script == UNKNOWN:
                    yield Command(argv, "the shell runs a computed string", source)
                    return
                yield from _commands(script, depth + 1)
                return
            if word in ("-o", "+o"):
                i += 2
                continue
            i += 1
            continue
        if word.startswith("--"):
            i += 1
            continue
        yield Command(
            argv, f"the shell runs the script {word}, which the line does not show", source
        )
        return
    yield Command(argv, "the shell reads its commands from its input", source)


def _git(argv: tuple[str, ...], source: str, depth: int) -> Iterator[Command]:
    """git with its global options dropped and aliases from ``-c alias.X=Y`` resolved."""
    aliases: dict[str, str] = {}
    i = 1
    while i < len(argv):
        word = argv[i]
        if word in GIT_VALUE_OPTIONS:
            if word == "-c" and i + 1 < len(argv):
                key, _, value = argv[i + 1].partition("=")
                if key.lower().startswith("alias."):
                    aliases[key[len("alias.") :]] = value
            i += 2
            continue
        if word.startswith("--") and "=" in word:
            i += 1
            continue
        if word.startswith("-"):
            i += 1
            continue
        break
    if i >= len(argv):
        yield Command(("git",), "", source)
        return
    sub, rest = argv[i], argv[i + 1 :]
    if sub == UNKNOWN:
        yield Command(("git", UNKNOWN, *rest), "", source)
        return
    if sub in aliases:
        expansion = aliases[sub]
        if expansion.startswith("!"):
            yield from _commands(expansion[1:] + " " + " ".join(rest), depth + 1)
            return
        yield from _git(("git", *expansion.split(), *rest), source, depth + 1)
        return
    if sub not in GIT_COMMANDS:
        # An alias from a config file the line does not show: it could be any git command.
        yield Command(("git", UNKNOWN, *rest), "", source)
        return
    yield Command(("git", sub, *rest), "", source)
