"""The layers as a test: imports point down (hpo -> inverse -> surrogates -> physics -> qcdgip), no cycles.

Every import of every module counts, the ones inside functions too: a lazy import that closes a cycle or reaches
up is still a dependency the layout does not allow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("qcdgip", "physics", "surrogates", "inverse", "hpo")  # bottom to top


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` that names one of the project's modules."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a.b import c`` depends on the module a.b.c when there is one, else on a.b.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in LAYERS:
                found.append((node.lineno, target))
    return found


def import_graph(root: Path) -> dict[str, list[tuple[int, str]]]:
    files = [p for layer in LAYERS for p in sorted((root / layer).rglob("*.py"))]
    known = {module_name(p, root) for p in files}
    return {module_name(p, root): imports_of(p, root, known) for p in files}


def upward_imports(graph: dict[str, list[tuple[int, str]]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for source, edges in graph.items():
        for line, target in edges:
            if rank[target.split(".")[0]] > rank[source.split(".")[0]]:
                bad.append(f"{source}:{line} imports {target}")
    return bad


def cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for _, w in graph.get(v, []):
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
            if len(component) > 1 or any(t == v for _, t in graph.get(v, [])):
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_a_layer_above_it():
    assert upward_imports(import_graph(ROOT)) == []


def test_no_import_cycle():
    assert cycles(import_graph(ROOT)) == []


def test_every_layer_is_a_package_with_modules():
    graph = import_graph(ROOT)
    for layer in LAYERS:
        assert layer in graph, f"{layer}/__init__.py missing"
        assert sum(m.startswith(layer + ".") for m in graph) >= 3


@pytest.fixture
def bad_tree(tmp_path: Path) -> Path:
    """A tree that breaks both rules: physics imports inverse, and two qcdgip modules import each other."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "physics" / "model.py").write_text("def f():\n    from inverse.solver import g\n")
    (tmp_path / "inverse" / "solver.py").write_text("from physics.model import f\n\ndef g():\n    pass\n")
    (tmp_path / "qcdgip" / "a.py").write_text("from qcdgip import b\n")
    (tmp_path / "qcdgip" / "b.py").write_text("from . import a\n")
    return tmp_path


def test_the_checks_catch_an_upward_import_and_a_cycle(bad_tree: Path):
    graph = import_graph(bad_tree)
    assert upward_imports(graph) == ["physics.model:2 imports inverse.solver"]
    found = cycles(graph)
    assert ["qcdgip.a", "qcdgip.b"] in found
    assert ["inverse.solver", "physics.model"] in found
