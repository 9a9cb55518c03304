"""What the `notebook` MCP server's tools do: look at the notebook and the live kernel, try
Python in it, propose a cell. No MCP and no policy here (see `notebook_server`): plain
functions over the kernel's user namespace and the notebook file, so they are tested alone.

- `cells`: the notebook's cells as saved (the kernel cannot see the front end's unsaved
  document without a front-end extension), outputs as text, cut with a note; the cell running
  the agent's turn is marked by its id.
- `variables`: the user's names (no values): type, shape or length, size.
- `inspect`: one value summarised (`interpolate.ValueWriter` writes a DataFrame in full to
  ``agent-data/``, as ``{df}`` in a prompt does).
- `run`: Python executed in the user namespace; stdout, stderr, the last expression's repr,
  the error. It runs outside the sandbox: the server asks the policy before calling it.
- `insert_cell`: a cell proposed below the running one, as IPython's ``set_next_input``
  payload (``replace=False``), which JupyterLab and Notebook 7 show with no extension.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from omnikernel.kernel.interpolate import ValueWriter, cut, is_dataframe

#: Characters of one output, one cell's source or one repr the tools return at most.
MAX_TEXT = 2000
#: Characters the whole `cells` answer holds at most (the last cells are kept).
MAX_CELLS_TEXT = 40000
#: Characters of `run`'s stdout / stderr kept.
MAX_RUN_TEXT = 8000


def _hidden(name: str, value: Any) -> bool:
    """Names the user did not make: IPython's own, modules, the underscore history."""
    import types

    return (
        name.startswith("_")
        or name in ("In", "Out", "exit", "quit", "get_ipython")
        or isinstance(value, types.ModuleType)
    )


def describe_shape(value: Any) -> str:
    """A value's shape or length in a few words ("" when it has none)."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        return "×".join(str(n) for n in shape)
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        return f"len {len(value)}"
    return ""


def size_of(value: Any) -> int:
    """Bytes a value holds, as its library counts them (``nbytes``, pandas' deep usage)."""
    if is_dataframe(value):
        try:
            return int(value.memory_usage(deep=True).sum())
        except Exception:
            return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    try:
        return sys.getsizeof(value)
    except Exception:
        return 0


def variables(namespace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The user's names: type, shape or length, size in bytes. Never a value."""
    out = []
    for name, value in sorted(namespace.items()):
        if _hidden(name, value) or callable(value) and not hasattr(value, "shape"):
            continue
        kind = type(value)
        out.append(
            {
                "name": name,
                "type": f"{kind.__module__}.{kind.__qualname__}"
                if kind.__module__ != "builtins"
                else kind.__qualname__,
                "shape": describe_shape(value),
                "size_bytes": size_of(value),
            }
        )
    return out


def inspect_value(name: str, namespace: Mapping[str, Any], folder: Path) -> str:
    """A summary of one value: a DataFrame's shape, dtypes, head and describe (and the whole
    frame written to ``agent-data/``); an array's shape, dtype and stats; else its repr, cut."""
    if name not in namespace:
        known = ", ".join(v["name"] for v in variables(namespace)[:30]) or "none"
        raise KeyError(f"no variable {name!r} in the kernel; its variables: {known}")
    value = namespace[name]
    if is_dataframe(value):
        text, _summary, _file = ValueWriter(folder)(name, value)
        try:
            described = value.describe(include="all").to_string()
        except Exception as exc:
            described = f"(describe failed: {exc})"
        return f"{text}\n\ndescribe():\n{cut(described, MAX_TEXT)}"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:
        lines = [f"{type(value).__name__} `{name}`: shape {shape}, dtype {dtype}"]
        with contextlib.suppress(Exception):
            lines.append(
                f"min {value.min()}, max {value.max()}, mean {value.mean()}, std {value.std()}"
            )
        with contextlib.suppress(Exception):
            lines.append(f"first values: {cut(repr(value.ravel()[:10]), MAX_TEXT)}")
        return "\n".join(lines)
    text, summary, _file = ValueWriter(folder, MAX_TEXT)(name, value)
    return f"{name} ({summary}):\n{text}"


def output_text(output: Mapping[str, Any]) -> str:
    """One stored output as text (its plain-text form; images named, not sent)."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
    elif kind == "error":
        text = f"{output.get('ename', '')}: {output.get('evalue', '')}"
    else:
        data = output.get("data") or {}
        text = data.get("text/plain") or data.get("text/markdown") or ""
        if not text:
            text = "[" + ", ".join(sorted(data)) + "]"
    if isinstance(text, list):
        text = "".join(text)
    return cut(str(text), MAX_TEXT)


def cells(notebook: Path | None, running_cell: str) -> dict[str, Any]:
    """The notebook's cells as saved, the running one marked (see the module docstring)."""
    if notebook is None or notebook.suffix != ".ipynb" or not notebook.is_file():
        return {
            "notebook": str(notebook or ""),
            "cells": [],
            "note": "The kernel does not know its notebook file (run from a console or a "
            "script, or not saved yet).",
        }
    try:
        data = json.loads(notebook.read_text())
    except (OSError, ValueError) as exc:
        return {"notebook": str(notebook), "cells": [], "note": f"cannot read it: {exc}"}
    out: list[dict[str, Any]] = []
    for index, cell in enumerate(data.get("cells") or []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        entry: dict[str, Any] = {
            "index": index,
            "id": cell.get("id", ""),
            "type": cell.get("cell_type", ""),
            "source": cut(source, MAX_TEXT),
        }
        if cell.get("cell_type") == "code":
            entry["execution_count"] = cell.get("execution_count")
            entry["outputs"] = [output_text(o) for o in cell.get("outputs") or []]
        if running_cell and cell.get("id") == running_cell:
            entry["running"] = True
        out.append(entry)
    note = "As last saved; unsaved edits in the front end are not seen."
    while len(json.dumps(out)) > MAX_CELLS_TEXT and len(out) > 1:
        out.pop(0)
        note = f"The first cells are left out (the answer is cut at {MAX_CELLS_TEXT} chars). {note}"
    return {"notebook": str(notebook), "running_cell": running_cell, "cells": out, "note": note}


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """The stop button (SIGINT) interrupts the code too: while a turn runs, the kernel's
    handler only cancels the turn's task, which cannot run while the code holds the loop. The
    handler still runs first (the turn stops), then the code gets a KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run `code` in `namespace` as a cell would (the last expression's value is returned as
    its repr); stdout and stderr captured, an error returned, never raised. The stop button
    interrupts it (`interruptible`)."""
    out, err = io.StringIO(), io.StringIO()
    result: str | None = None
    error: str | None = None
    try:
        tree = ast.parse(code, "<kernel_run>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), interruptible():
            exec(compile(tree, "<kernel_run>", "exec"), namespace)
            if last is not None:
                value = eval(compile(ast.Expression(last.value), "<kernel_run>", "eval"), namespace)
                if value is not None:
                    result = cut(repr(value), MAX_TEXT)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # the kernel lives on
        error = cut("".join(traceback.format_exception_only(type(exc), exc)).strip(), MAX_TEXT)
        tb = traceback.extract_tb(exc.__traceback__)
        lines = [f"line {f.lineno}" for f in tb if f.filename == "<kernel_run>"]
        if lines:
            error += f" (at {lines[-1]})"
    return {
        "stdout": cut(out.getvalue(), MAX_RUN_TEXT),
        "stderr": cut(err.getvalue(), MAX_RUN_TEXT),
        "result": result,
        "error": error,
    }


#: ``set_next_input`` as IPython sends it: (text, replace).
SetNextInput = Callable[[str, bool], None]


def insert_cell(source: str, cell_type: str, set_next_input: SetNextInput) -> str:
    """Propose a cell below the running one. In this kernel a cell is a prompt unless it starts
    with a magic, so Python goes in under ``%%python`` and markdown under IPython's
    ``%%markdown`` (the payload makes code cells only)."""
    if cell_type not in ("code", "markdown"):
        raise ValueError(f"type must be 'code' or 'markdown', not {cell_type!r}")
    if not source.strip():
        raise ValueError("the cell's source is empty")
    magic = "%%python" if cell_type == "code" else "%%markdown"
    text = source if source.lstrip().startswith("%") else f"{magic}\n{source}"
    set_next_input(text, False)
    return (
        "The cell is proposed below the running one in the notebook; the person reads it and "
        "runs it (nothing runs by itself)."
    )
