"""The packages' import graph has no cycle: every import between the project's own modules, at
module level or inside a function, read from the source (AST), with a package's ``__init__``
counted as the module it is. A cycle held apart by an import inside a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fewshot", "episodes")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]
             ) -> set[str]:
    """The project's modules an import statement of module ``name`` (file ``path``) loads."""
    if isinstance(node, ast.Import):
        candidates = [a.name for a in node.names]
    else:
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        if node.level:
            base = base[: len(base) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        subs = [f"{prefix}.{a.name}" for a in node.names]
        candidates = [s for s in subs if s in known] or [prefix]
        if len(candidates) < len(subs) and prefix not in candidates:
            candidates.append(prefix)  # some names are attributes of the module itself
    out = set()
    for c in candidates:
        while c and c not in known:
            c = c.rpartition(".")[0]
        if c and c != name:
            out.add(c)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.setdefault(name, set()).update(imported(name, path, node, set(known)))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_episodes_never_imports_fewshot():
    assert not [(a, b) for a, bs in graph().items() for b in bs
                if a.startswith("episodes") and b.startswith("fewshot")]


@pytest.mark.parametrize("source, expected", [
    ({"a": "from . import b\n", "b": "def f():\n    from .a import x\n"}, [["pkg.a", "pkg.b"]]),
    ({"a": "from . import b\n", "b": "x = 1\n"}, []),
])
def test_the_check_finds_a_cycle_held_apart_inside_a_function(tmp_path: Path, monkeypatch,
                                                             source, expected):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    for name, text in source.items():
        (tmp_path / "pkg" / f"{name}.py").write_text(text)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGES"]), "PACKAGES", ("pkg",))
    assert cycles(graph()) == expected
