"""The package's import graph has no cycles (module-level and function-level imports alike).

Data flows one way (lattice <- data <- embed <- predict / generate <- campaign); an import inside a
function still couples the two modules, so every ``import``/``from ... import`` counts. A package's
``__init__`` is a node of its own: ``from invdesign.lattice.host import X`` is an edge to
``invdesign.lattice.host`` only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import invdesign

ROOT = Path(invdesign.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: {imported invdesign modules}}`` from the source (no import executed)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import invdesign.x.y as z` of a non-module attribute
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("invdesign"):
                    graph[mod].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_finder_sees_a_cycle(tmp_path):
    pkg = tmp_path / "invdesign"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from invdesign.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from invdesign import a\n")
    (pkg / "c.py").write_text("from . import b\n")
    g = import_graph(pkg)
    assert g["invdesign.c"] == {"invdesign.b"}
    assert find_cycles(g) == [["invdesign.a", "invdesign.b"]]


def test_no_import_cycles_in_invdesign():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_only_the_cli_imports_the_command_layer():
    """The library (invdesign.api included) never imports invdesign.commands: the commands call the library, not the
    reverse (host placement lives in invdesign.predict.placement, shared by both)."""
    graph = import_graph()
    cli = {m for m in graph if m.startswith("invdesign.commands") or m.startswith("invdesign.cli")}
    bad = {m: sorted(t for t in targets if t.startswith("invdesign.commands"))
           for m, targets in graph.items() if m not in cli}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"modules outside the CLI import the command layer: {bad}"
    assert not any(t.startswith("invdesign.commands") for t in graph["invdesign.api"])
