"""What the magic families share: the help line, `%agent`'s argument parser, tables, and the
base class of a family (it holds the kernel's session)."""

from __future__ import annotations

import dataclasses
import keyword
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.display import display

from omnikernel.view.sanitize import agent_bundle

if TYPE_CHECKING:
    from omnikernel.session.core import AgentSession

#: What `%agent` and friends say when asked something they do not know.
MAGICS_HELP = (
    "Omnigent magics: %agent [NAME [--model M]], %agents, "
    "%%agent NAME [--model M] [--review] [--out VAR], %fix [NOTE], "
    "%history, %spend, %budget [USD|N tokens|off], %record [FILE|off], %replay FILE|off, "
    "%sandbox [auto|bwrap|firejail|off|allow HOST|@PRESET|read PATH], %autoapprove [on|off], "
    "%session [new|fork [NAME]|list|NAME], %fork [NAME], %export md|html|jsonl|ipynb [FILE], "
    "%policy, %share [feed|revoke [ro|rw|all]], %%python. "
    "IPython's own: %lsmagic."
)


@dataclasses.dataclass(frozen=True)
class AgentArgs:
    name: str | None = None
    model: str | None = None
    review: bool = False
    out: str | None = None  # a Python name the answer is also stored in


def parse_agent_args(line: str, allow_review: bool = False) -> AgentArgs:
    """`NAME [--model M] [--review] [--out VAR]` -> AgentArgs; raises UsageError with the usage
    on bad input (``--review`` and ``--out`` only where `allow_review`: in a ``%%agent``
    cell)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot parse {line!r}: {exc}. Usage: %agent NAME [--model M]") from None
    name = model = None
    review = False
    out = None
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--review" and allow_review:
            review, i = True, i + 1
            continue
        if (word == "--out" or word.startswith("--out=")) and allow_review:
            if word == "--out":
                if i + 1 >= len(words):
                    raise UsageError("--out needs a Python name. Usage: %%agent NAME --out VAR")
                out, i = words[i + 1], i + 2
            else:
                out, i = word.split("=", 1)[1], i + 1
            if not out.isidentifier() or keyword.iskeyword(out):
                raise UsageError(f"--out takes a Python variable name, not {out!r}")
            continue
        if word in ("--model", "-m"):
            if i + 1 >= len(words):
                raise UsageError("--model needs a value. Usage: %agent NAME [--model M]")
            model, i = words[i + 1], i + 2
            continue
        if word.startswith("--model="):
            model = word.split("=", 1)[1]
        elif word.startswith("-"):
            raise UsageError(f"unknown option {word!r}. Usage: %agent NAME [--model M]")
        elif name is None:
            name = word
        else:
            raise UsageError(f"unexpected {word!r}. Usage: %agent NAME [--model M]")
        i += 1
    return AgentArgs(name, model, review, out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, str]:
    """A table as HTML (JupyterLab; cells may hold agent text, so it goes through `sanitize`)
    and aligned plain text (consoles, nbclient)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    plain = [line(headers)] + [line(r) for r in cells]

    def md_cell(text: str) -> str:
        # `$` escaped: two of them in a cell would render as LaTeX math in JupyterLab.
        return text.replace("|", "\\|").replace("\n", " ").replace("$", "\\$")

    md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    md += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in cells]
    return agent_bundle("\n".join(md), "\n".join(plain))


def show(plain: str, markdown: str | None = None) -> None:
    display(agent_bundle(markdown or plain, plain), raw=True)


def turn_cost(cost: Any, rehearsal: bool) -> str:
    """A turn's cost for `%history`: a rehearsal's $0 says it is one (nothing was spent)."""
    if rehearsal and cost == 0:
        return "$0 (rehearsal)"
    return f"${cost:.4f}" if isinstance(cost, int | float) else "-"


class SessionMagicsBase(Magics):
    """A family of magics acting on the kernel's session."""

    def __init__(self, shell: Any, session: AgentSession):
        super().__init__(shell)
        self.session = session
