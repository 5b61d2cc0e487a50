"""The package's import graph: no cycles between declearn's modules, and declearn never imports
``widgets`` (the layers: topology -> comm -> problems/algorithms -> optim/exercises; widgets on
top).

Every ``import`` of a declearn module counts, at module level or inside a function (a lazy import
hides a cycle from Python, not from the reader), except under ``if TYPE_CHECKING:`` (names for
annotations only, as the protocol's return types). ``from declearn.a import b`` is an edge to the
module ``declearn.a.b`` when that is a module, else to ``declearn.a``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "declearn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The modules ``path`` imports (declearn's and widgets')."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):  # annotations only: not walked
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = [ast.Pass()]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                found.add(child if child in known else module)
    return {m for m in found if m.split(".")[0] in ("declearn", "widgets")}


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph = {}
    for name, path in known.items():
        edges = set()
        for target in _imports(path, name, known):
            while target not in known and "." in target:  # declearn.a.b.name -> declearn.a.b
                target = target.rpartition(".")[0]
            if target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_package():
    graph = _graph()
    assert "declearn.comm.mpi.comm" in graph and "declearn.topology.base" in graph
    assert "declearn.comm.base" in graph["declearn.comm.mpi.comm"]


def test_no_import_cycle_between_declearn_modules():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_topology_classes_import_none_of_the_modules_built_on_them():
    """The Topology classes' conveniences (``.rho``, ``.lazy()``, ``.product()``, ``.draw()``)
    use modules that take a topology without importing its class, never the families or
    analysis, which build on the classes."""
    graph = _graph()
    built_on = {m for m, targets in graph.items() if "declearn.topology.base" in targets}
    assert "declearn.topology.analysis" in built_on and "declearn.topology.weights" in built_on
    assert not graph["declearn.topology.base"] & built_on


def test_declearn_never_imports_widgets():
    bad = {m: sorted(t for t in targets if t.split(".")[0] == "widgets")
           for m, targets in _graph().items()}
    assert not {m: t for m, t in bad.items() if t}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
