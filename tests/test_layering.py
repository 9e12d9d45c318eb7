"""The library's layering: `eval/` is the model-agnostic lower layer, and no files import each other.

    jepa_common  <-  eval  <-  llm_jepa, vljepa      (an arrow points at what a package imports)

`eval/` holds metrics and scorers on arrays, ids and strings, so anyone can score their own
embeddings or generations without our models; what turns a model into those arrays lives with
the model. Imports are read from the source (every `import` statement, module level or inside a
function), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jepa_common", "eval", "llm_jepa", "vljepa")
ALLOWED = {"jepa_common": {"jepa_common"}, "eval": {"eval", "jepa_common"},
           "llm_jepa": {"llm_jepa", "eval", "jepa_common"}, "vljepa": {"vljepa", "eval", "jepa_common"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Library modules imported by `path` (`from a.b import c` counts as a.b.c when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _library_modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_eval_imports_no_model_package():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ("vljepa", "llm_jepa"))
           for m, deps in _graph().items() if m.split(".")[0] == "eval"}
    assert not {m: d for m, d in bad.items() if d}, "eval/ must not import vljepa or llm_jepa"


def test_packages_import_only_downwards():
    bad = {m: sorted(d for d in deps if d.split(".")[0] not in ALLOWED[m.split(".")[0]])
           for m, deps in _graph().items()}
    assert not {m: d for m, d in bad.items() if d}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into a package's own `__init__` from its submodules: importing `vljepa.x` runs
    `vljepa/__init__.py` first by Python's rules, which is not a dependency the file chose."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles_between_library_files():
    assert _cycles(_package_init_edges(_graph())) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
