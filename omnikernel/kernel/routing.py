"""Which way a cell goes: a prompt to an agent, or ordinary IPython. Pure.

- ``%%python`` runs the rest of the cell as Python.
- ``%%agent NAME [--model M]`` sends the rest of the cell to harness NAME, once.
- A cell whose first non-blank line starts with ``%`` or ``!`` is IPython (magics, shell).
- Anything else is a prompt to the current harness.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Route:
    kind: str  # "prompt" | "ipython"
    body: str  # the prompt, or the code for IPython
    agent_args: str | None = None  # the arguments of %%agent, if the cell had one
    magic: str = ""  # name of the leading % / %% magic, for "unknown magic" errors


def route(code: str) -> Route:
    stripped = code.lstrip("\n\r\t ")
    first, _, rest = stripped.partition("\n")
    head = first.strip()
    if head.startswith("%%"):
        name, _, args = head[2:].partition(" ")
        if name == "python":
            return Route("ipython", rest, magic="python")
        if name == "agent":
            return Route("prompt", rest.strip(), agent_args=args.strip(), magic="agent")
        return Route("ipython", code, magic=name)
    if head.startswith("%"):
        name = head[1:].split(maxsplit=1)[0] if head[1:].strip() else ""
        return Route("ipython", code, magic=name.rstrip("?"))
    if head.startswith("!") or not head:
        return Route("ipython", code)
    return Route("prompt", stripped.rstrip())
