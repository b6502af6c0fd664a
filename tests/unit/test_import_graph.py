"""The package's layout: the layer rule, no import cycle (between layers or between modules), small modules.

Every import counts: top-level, inside functions (lazy) and under TYPE_CHECKING. A layer is a subpackage
(`core`, `engine`, …) or a top-level module (`api`, `cli`); the package's own `__init__` is left out (it only
re-exports the API lazily). Registries name classes by string (`"uniedit_synth.offline.builtin:BuiltinText"`)
and import them when asked: those are plugin look-ups, not imports, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "uniedit_synth"

#: The layer rule: each layer and the layers it may import (besides its own modules). From low to high:
#:     core < method < run < {backends, offline, sources} < stages < engine < {export, audit, train} < report
#:     < evaluate < api < cli
#: A layer may import any lower tier; inside a tier only the edges listed as peers (they form no cycle).
#: docs/architecture.md shows the same table; change both together.
TIERS: list[set[str]] = [
    {"core"},  # contracts: records, errors, config models, the plan model, prompts, bundled data, redaction
    {"method"},  # the paper's logic as pure functions: answers, plan drawing, reasoning, cascade, masks, screen
    {"run"},  # the run directory: fs, lock, manifest, stats, response cache
    {"backends", "offline", "sources"},  # model backends, the offline world, VQA sources
    {"stages"},  # classify, rewrite, edit, judge: one record through one step
    {"engine"},  # shards through the stages on Ray or inline
    {"export", "audit", "train"},  # what is done with a finished run
    {"report"},  # the report page (shows the audit, writes images with export's file helpers)
    {"evaluate"},  # `uniedit eval`: editors on benchmarks, judged through the engine (its page reuses report's css)
    {"api"},  # the Python front door
    {"cli"},  # the command line (over the API)
]
PEERS: dict[str, set[str]] = {
    "offline": {"backends"},  # the builtin backends implement backends/base.py's contract
    "sources": {"offline"},  # the `scenes` source draws records from the offline world
}


def allowed_imports() -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    below: set[str] = set()
    for tier in TIERS:
        for layer in tier:
            allowed[layer] = below | PEERS.get(layer, set())
        below = below | tier
    return allowed


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def imported_modules(path: Path) -> set[str]:
    """Every dotted name `path` imports (`from a import b` gives `a` and `a.b`: b may be a module)."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    module = module_name(path)
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


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py") if path != PACKAGE / "__init__.py"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "uniedit_synth" or len(parts) < 2:
        return None
    name = parts[1]
    return name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else None


def module_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name resolves to the longest module it starts with)."""
    modules = package_modules()

    def resolve(target: str) -> str | None:
        parts = target.split(".")
        for end in range(len(parts), 1, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {resolve(t) for t in imported_modules(path)} - {None, name}
        graph[name] = {t for t in targets if t is not None}
    return graph


def layer_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for source, targets in module_graph().items():
        for target in targets:
            if layer_of(source) != layer_of(target):
                graph.setdefault(layer_of(source), set()).add(layer_of(target))
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


def layer_violations() -> list[str]:
    allowed = allowed_imports()
    found = []
    for source, targets in sorted(module_graph().items()):
        for target in sorted(targets):
            low, high = layer_of(source), layer_of(target)
            if low != high and high not in allowed[low]:
                found.append(f"{source} imports {target} ({low} may import: {', '.join(sorted(allowed[low]))})")
    return found


# -- the layer rule ----------------------------------------------------------------------------------------
def test_every_layer_is_in_the_table():
    layers = {layer_of(name) for name in package_modules()}
    assert layers == set(allowed_imports()), "a new layer needs its place in TIERS (and in docs/architecture.md)"


def test_no_layer_imports_a_higher_one():
    graph = module_graph()
    assert "uniedit_synth.core.records" in graph["uniedit_synth.stages.base"]  # the walker sees the imports
    assert "uniedit_synth.core.terminal" in graph["uniedit_synth.engine.runtime"]  # lazy ones too
    assert layer_violations() == []


def test_the_rule_itself_has_no_cycle():
    allowed = allowed_imports()
    assert find_cycle(allowed) is None
    assert allowed["core"] == set() and allowed["sources"] == {"core", "method", "run", "offline"}


# -- no cycles ------------------------------------------------------------------------------------------------
def test_no_cycle_between_layers():
    cycle = find_cycle(layer_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_cycle_between_modules():
    cycle = find_cycle(module_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_walker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# -- small modules, a short top level -------------------------------------------------------------------
MAX_LINES = 600


def test_no_module_over_600_lines():
    long = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in package_modules().items()}
    over = {name: n for name, n in long.items() if n > MAX_LINES}
    assert over == {}


def test_at_most_8_modules_at_the_top_level():
    top = [path.name for path in PACKAGE.glob("*.py") if path.name != "__init__.py"]
    assert len(top) <= 8, top
