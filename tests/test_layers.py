"""The folders are the architecture: each package is a layer, and imports run only downward.

Every import in the two packages (module level and inside functions, type-checking ones too)
is read with `ast`; an import of a higher layer, or any cycle between modules, fails with the
edges that break the rule. `LAYERS` is the package map of docs/architecture.md, lowest first.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from .conftest import REPO

#: Lowest first: a module may import its own package and the packages listed before it.
LAYERS = [
    "omnikernel.events",
    "omnikernel.policy",
    "omnikernel.store",
    "omnikernel.view",
    "omnikernel.approvals",
    "omnikernel.proc",
    "omnikernel.sandbox",
    "omnikernel.gateway",
    "omnikernel.rehearsal",
    "omnikernel.harnesses",
    "omnikernel.session",
    "omnikernel.kernel",
    "omnikernel.cli",
    "omnikernel.testing",
    "jupyter_ext",
]
#: The package itself (its version) and its entry point sit outside the layers.
OUTSIDE = {"omnikernel", "omnikernel.__main__"}


def modules() -> dict[str, Path]:
    found = {}
    for root in ("omnikernel", "jupyter_ext"):
        for path in (REPO / root).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours `module` imports (``from P import name`` counts P.name if that is a
    module, else P)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
    return {m for m in out if m in known and m != module}


def layer_of(module: str) -> int | None:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports(m, p, set(found)) for m, p in found.items()}


def test_every_module_sits_in_a_layer():
    stray = [m for m in graph() if layer_of(m) is None and m not in OUTSIDE]
    assert not stray, f"modules outside every layer (give each a folder in LAYERS): {stray}"


def test_imports_run_only_downward():
    upward = []
    for module, targets in graph().items():
        if module in OUTSIDE:
            continue
        for target in targets:
            if target in OUTSIDE:
                continue
            if layer_of(target) > layer_of(module):  # type: ignore[operator]
                upward.append(f"{module} -> {target}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back():
    edges = graph()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_layer_map_has_no_empty_layer():
    found = graph()
    empty = [p for p in LAYERS if not any(layer_of(m) == LAYERS.index(p) for m in found)]
    assert not empty, f"layers with no module (remove them from LAYERS): {empty}"


def test_benchmarks_live_outside_the_packages():
    stray = [m for m in modules() if "bench" in m.rpartition(".")[2] or m.endswith(".soak")]
    assert not stray, f"benchmarks belong in benchmarks/, outside the wheel: {stray}"
