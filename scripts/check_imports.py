#!/usr/bin/env python3
"""Check the import graph of harness/, methods/ and datasets/: no cycle, dependencies one way.

Usage: ``python scripts/check_imports.py [ROOT]`` (ROOT: the project root, default: this
script's parent's parent). Prints one line per violation and exits 1, or exits 0 when clean.

Every ``import`` / ``from ... import`` statement counts, including those inside functions
(``ast`` finds them all). An edge goes to every module a statement names: ``import a.b``
and ``from a.b import name`` name a.b; ``from a import b`` names a, and a.b as well when b is
a submodule (so a package's base module doing ``from package import submodule`` imports the
package back). Only modules of the three packages are nodes.

Rules:
  cycles   no cycle among modules (Tarjan's strongly connected components);
  content  methods.* and datasets.* import from harness only harness.errors, harness.registry
           and harness.toolkit(.*) (and the bare package, as in ``from harness import errors``);
  engine   harness.* (except errors, registry, toolkit) imports content only through the
           packages methods and datasets or their base modules, never a plugin module;
  toolkit  harness.toolkit(.*) imports nothing from methods, datasets or the rest of harness
           except harness.errors (and the bare package).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("harness", "methods", "datasets")
CONTENT = ("methods", "datasets")
#: Harness modules content may import (and the engine's shared, content-free layer).
CONTRACT = ("harness.errors", "harness.registry")
TOOLKIT = "harness.toolkit"


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root``'s three packages."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` in ``module``."""
    package = module if _is_package(path) else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    base = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*base, name] if name else base)


def _known_prefix(name: str, modules: dict[str, Path]) -> str | None:
    """The longest dotted prefix of ``name`` that is a module of the tree."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path) -> list[Edge]:
    """Edges from ``module`` to modules of the tree, one per imported name, in file order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    shown = path.relative_to(root).as_posix()
    edges: list[Edge] = []

    def add(target: str | None, line: int) -> None:
        if target is not None and target != module:
            edges.append(Edge(module, target, shown, line))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_known_prefix(alias.name, modules), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, path, node.level, node.module) if node.level else node.module or ""
            add(_known_prefix(base, modules), node.lineno)
            for alias in node.names:
                if f"{base}.{alias.name}" in modules:
                    add(f"{base}.{alias.name}", node.lineno)
    return sorted(set(edges), key=lambda e: (e.line, e.target))


def import_graph(root: Path) -> dict[str, list[Edge]]:
    """Module -> its import edges within the tree."""
    modules = module_names(root)
    return {name: imports_of(name, path, modules, root) for name, path in modules.items()}


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components with more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def cycle_path(graph: dict[str, list[Edge]], component: list[str]) -> list[Edge]:
    """One cycle through the component's first module (breadth-first, so a shortest one)."""
    members, start = set(component), component[0]
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in members:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if edge.target not in previous:
                    previous[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")


def _top(module: str) -> str:
    return module.split(".")[0]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violation(edge: Edge) -> str | None:
    """Why ``edge`` breaks the content, engine or toolkit rule, or None."""
    source, target = edge.source, edge.target
    if _top(source) in CONTENT and _in(target, "harness") and target != "harness":
        if target not in CONTRACT and not _in(target, TOOLKIT):
            return (
                f"content {source} imports {target} (content may import from harness only "
                f"{', '.join(CONTRACT)} and {TOOLKIT})"
            )
    elif _in(source, TOOLKIT):
        if _top(target) in CONTENT or (
            target not in ("harness", "harness.errors") and _in(target, "harness") and not _in(target, TOOLKIT)
        ):
            return f"toolkit {source} imports {target} (the toolkit may import only harness.errors and itself)"
    elif _top(source) == "harness" and source not in CONTRACT and _top(target) in CONTENT:
        allowed = {f"{p}{suffix}" for p in CONTENT for suffix in ("", ".base")}
        if target not in allowed:
            return (
                f"engine {source} imports the plugin module {target} (reach content through "
                f"{', '.join(sorted(allowed))})"
            )
    return None


def check(root: Path) -> list[str]:
    """Every violation, one line each (empty when the tree is clean)."""
    graph = import_graph(root)
    problems = []
    for component in strongly_connected(graph):
        path = cycle_path(graph, component)
        steps = " -> ".join(f"{e.target} ({e.where()})" for e in path)
        problems.append(f"import cycle among {', '.join(component)}: {path[0].source} -> {steps}")
    for edges in graph.values():
        for edge in edges:
            why = layer_violation(edge)
            if why:
                problems.append(f"{edge.where()}: {why}")
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    missing = [p for p in PACKAGES if not (root / p).is_dir()]
    if missing:
        print(f"check_imports: {root} has no {', '.join(missing)} folder", file=sys.stderr)
        return 2
    problems = check(root)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
