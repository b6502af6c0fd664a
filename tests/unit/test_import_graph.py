"""The import graph of uniedit_synth between its packages and top-level modules has no cycle.

Every import counts: top-level, inside functions (lazy) and under TYPE_CHECKING. A node is a subpackage
(`engine`, `stages`, …) or a top-level module (`config`, `store`, …); the package's own `__init__` is left
out (it only re-exports the API lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "uniedit_synth"


def node_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "uniedit_synth" or len(parts) < 2:
        return None
    name = parts[1]
    if name in ("core", "method", "run", "offline") and len(parts) > 2:
        return f"{name}.{parts[2]}"  # the former top-level modules, now grouped by layer, stay nodes of their own
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import config`
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        source = node_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for target in imported_modules(path):
            dest = node_of(target)
            if source and dest and dest != source:
                graph.setdefault(source, set()).add(dest)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_package_cycle():
    graph = package_graph()
    assert "engine" in graph["stages"] or "core.ledger" in graph["stages"]  # the walker sees the imports
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_walker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
