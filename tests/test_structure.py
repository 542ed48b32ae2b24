"""The package's import structure, read from the source (every import statement, function-level ones too):

- direction: ``tritongpt.kernels`` <- ``tritongpt.engine`` <- ``tritongpt.bench`` <- ``tritongpt.cli``; no module
  imports one of a higher layer, except the compatibility aliases listed in ALLOWED_UPWARD with the reason;
- no cycles between modules (a lazy import inside a function is still an edge).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"kernels": "tritongpt.kernels", "engine": "tritongpt.engine", "bench": "tritongpt.bench",
           "package": "tritongpt"}
# (importer, imported): why it may point up.
ALLOWED_UPWARD = {
    ("tritongpt.engine.cli", "tritongpt.cli"): "the command line's former home, kept importable as an alias that "
                                               "resolves names only when used",
}


def _layer(module: str) -> int:
    for i, prefix in enumerate(("tritongpt.kernels", "tritongpt.engine", "tritongpt.bench")):
        if module == prefix or module.startswith(prefix + "."):
            return i
    return 3  # tritongpt itself: the command line above every layer


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[rel.parts[0]], *parts])


def modules() -> dict[str, Path]:
    return {_module_name(f): f for folder in FOLDERS for f in sorted((REPO / folder).rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}

    def known(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                subs = [f"{source}.{a.name}" for a in node.names]
                # `from pkg import sub` depends on the submodules; `from mod import name` on the module.
                targets = subs if all(s in mods for s in subs) else [source]
            for t in targets:
                k = known(t)
                if k is not None and k != m:
                    graph[m].add(k)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_imports_only_point_down():
    graph = import_graph()
    up = sorted((a, b) for a, deps in graph.items() for b in deps if _layer(b) > _layer(a))
    unexplained = [f"{a} imports {b}" for a, b in up if (a, b) not in ALLOWED_UPWARD]
    assert not unexplained, "imports from a higher layer:\n" + "\n".join(unexplained)
    stale = [pair for pair in ALLOWED_UPWARD if pair not in up]
    assert not stale, f"ALLOWED_UPWARD lists imports that no longer exist: {stale}"


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_what_they_must():
    """The graph holds function-level imports and relative ones, and the cycle finder finds a planted cycle."""
    graph = import_graph()
    assert "tritongpt.engine.gpu_peaks" in graph["tritongpt.engine.train_loop"]  # imported inside a function
    assert "tritongpt.kernels.versions" in graph["tritongpt.kernels.spills"]  # `from . import versions`
    assert "tritongpt.engine" in graph["tritongpt.bench.train"]  # absolute: `from tritongpt.engine import GPT`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("tritongpt.cli") == 3 and _layer("tritongpt.kernels.tma") == 0


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> list[str]:
    """Every use of another package module's private name: ``from mod import _x``, ``import pkg._mod``,
    ``mod._x`` through a module bound by an import, and any import of a module whose path has a private part."""
    mods = modules()
    found: list[str] = []
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rpartition(".")[0]
        tree = ast.parse(f.read_text(encoding="utf-8"))
        bound: dict[str, str] = {}  # local name -> package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not source.startswith("tritongpt"):
                    continue
                for a in node.names:
                    sub = f"{source}.{a.name}"
                    if sub in mods:
                        bound[a.asname or a.name] = sub
                    if source != m and (_private(a.name) or any(_private(p) for p in source.split("."))):
                        found.append(f"{m}: from {source} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("tritongpt") and any(_private(p) for p in a.name.split(".")):
                        found.append(f"{m}: import {a.name}")
                    if a.asname and a.name in mods:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and _private(node.attr) and bound[node.value.id] != m):
                found.append(f"{m}: {bound[node.value.id]}.{node.attr}")
    return sorted(set(found))


def test_no_private_names_cross_modules():
    """A private name used by another module is a shared helper without a home: give it a public one."""
    found = private_imports()
    assert not found, "private names used across modules:\n" + "\n".join(found)
