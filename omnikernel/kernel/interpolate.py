"""Python values of the notebook in prompts: ``{name}``, ``{obj.attr}``, ``{In[3]}``,
``{Out[3]}``, ``{Err}``.

Invariants, so prompts with code, JSON or braces of their own are never altered:

- Only a brace pair around a Python name (optionally ``.attr`` steps and one ``[int]`` index)
  is a reference, and only when that name exists in the namespace given; everything else,
  ``{"json": 1}``, ``{ x }``, ``{undefined}`` or ``{i}`` inside a fenced code block, passes
  unchanged.
- The escape: ``{{name}}`` stands for the literal text ``{name}`` (again only when ``name``
  exists; otherwise it too passes unchanged, so ``{{title}}`` templates stay as written).
- A reference whose attribute or index fails is left as written and reported, not guessed at.

`interpolate` is pure: how a value becomes text is the `describe` function passed in
(`ValueWriter` in the kernel, which also saves DataFrames to files the agent can read).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: Characters of a value's text a prompt gets at most (the rest is cut, saying so).
MAX_VALUE_CHARS = 4000
#: Rows of a DataFrame a prompt shows (the whole frame goes to a file).
HEAD_ROWS = 5
#: Folder (inside the notebook's) DataFrames are written to for the agent.
DATA_DIR = "agent-data"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REF_BODY = rf"{_NAME}(?:\.{_NAME})*(?:\[-?\d+\])?"  # name(.attr)*([int])?
#: ``{{ref}}`` (the escape), else ``{ref}``.
_REF = re.compile(rf"\{{\{{(?P<escaped>{_REF_BODY})\}}\}}|\{{(?P<ref>{_REF_BODY})\}}")
_FENCE = re.compile(r"^(```+|~~~+).*?^\1[ \t]*$", re.M | re.S)


@dataclasses.dataclass(frozen=True)
class Substitution:
    ref: str  # as written between the braces, e.g. "df" or "In[3]"
    summary: str  # what it became, in a few words (shown in the cell)
    file: str = ""  # a file the value was written to, relative to the notebook's folder
    problem: str = ""  # why it was left as written (a failing attribute or index)


Describe = Callable[[str, Any], tuple[str, str, str]]  # (ref, value) -> (text, summary, file)


class _Missing(Exception):
    pass


def _resolve(ref: str, namespace: Mapping[str, Any]) -> Any:
    """The value `ref` names; `_Missing` when its first name is not in the namespace."""
    head, _, index = ref.partition("[")
    name, *attrs = head.split(".")
    if name not in namespace:
        raise _Missing
    value = namespace[name]
    for attr in attrs:
        value = getattr(value, attr)
    if index:
        value = value[int(index.rstrip("]"))]
    return value


def interpolate(
    prompt: str, namespace: Mapping[str, Any], describe: Describe
) -> tuple[str, list[Substitution]]:
    """`prompt` with each reference to an existing name replaced by `describe`'s text."""
    subs: list[Substitution] = []
    fences = [m.span() for m in _FENCE.finditer(prompt)]

    def replace(match: re.Match[str]) -> str:
        written = match.group(0)
        if any(start <= match.start() < end for start, end in fences):
            return written
        escaped = match.group("escaped")
        ref = escaped or match.group("ref")
        try:
            value = _resolve(ref, namespace)
        except _Missing:
            return written
        except Exception as exc:  # an attribute or index that fails: leave it, say why
            if not escaped:
                subs.append(Substitution(ref, "", problem=f"{type(exc).__name__}: {exc}"))
            return written
        if escaped:
            return "{" + ref + "}"  # the escape
        text, summary, file = describe(ref, value)
        subs.append(Substitution(ref, summary, file))
        return text

    return _REF.sub(replace, prompt), subs


def cut(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


def is_dataframe(value: Any) -> bool:
    """A pandas DataFrame, recognised without importing pandas (the kernel does not need it)."""
    cls = type(value)
    return cls.__name__ == "DataFrame" and cls.__module__.split(".")[0] == "pandas"


def _file_stem(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref).strip("._") or "value"


class ValueWriter:
    """Turns values into prompt text; DataFrames also into a file in the notebook's folder
    (parquet when pyarrow is importable, else CSV), which the sandbox lets the agent read."""

    def __init__(self, folder: Path, limit: int = MAX_VALUE_CHARS):
        self.folder = folder
        self.limit = limit

    def __call__(self, ref: str, value: Any) -> tuple[str, str, str]:
        if is_dataframe(value):
            return self._dataframe(ref, value)
        if isinstance(value, str):
            text = value  # source of In[n], a traceback, a name: as written
        else:
            try:
                text = repr(value)
            except Exception as exc:
                text = f"<{type(value).__name__}: repr failed: {exc}>"
        shown = cut(text, self.limit)
        note = f", cut to {self.limit}" if shown != text else ""
        return shown, f"{type(value).__name__}, {len(text):,} chars{note}", ""

    def _dataframe(self, ref: str, frame: Any) -> tuple[str, str, str]:
        folder = self.folder / DATA_DIR
        folder.mkdir(parents=True, exist_ok=True)
        if importlib.util.find_spec("pyarrow") is not None:
            path, fmt = folder / f"{_file_stem(ref)}.parquet", "Parquet"
            frame.to_parquet(path)
        else:
            path, fmt = folder / f"{_file_stem(ref)}.csv", "CSV"
            frame.to_csv(path, index=False)
        rel = path.relative_to(self.folder).as_posix()
        rows, cols = frame.shape
        dtypes = "\n".join(f"  {c}: {t}" for c, t in frame.dtypes.items())
        text = (
            f"DataFrame `{ref}`: {rows:,} rows × {cols} columns, saved in full as {fmt} to "
            f"{rel} (relative to the working directory; load that file for all rows).\n"
            f"Columns and dtypes:\n{dtypes}\n"
            f"First {min(rows, HEAD_ROWS)} rows:\n{cut(frame.head(HEAD_ROWS).to_string(), self.limit)}"
        )
        return text, f"DataFrame {rows:,}×{cols} → {rel}", rel


def describe_substitutions(subs: list[Substitution]) -> str:
    """One line per reference, for the cell: what each became."""
    lines = []
    for s in subs:
        if s.problem:
            lines.append(f"{{{s.ref}}} left as written ({s.problem})")
        else:
            lines.append(f"{{{s.ref}}} ← {s.summary}")
    return "\n".join(lines)
