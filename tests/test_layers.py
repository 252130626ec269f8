"""Tests for the layout of core/: the engine imports no other layer, no gradio under core, no import circles.

Imports are read with ast from the source (those inside functions included), so a lazy import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"


def module_name(path: Path) -> str:
    """The dotted module name of a file under the repository root (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in the file names (absolute, relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def core_imports(module: str) -> set[str]:
    """The core modules a core module imports (a `from package import submodule` counts the submodule)."""
    return {name for name in imported_names(MODULES[module]) if name in MODULES and name != module}


def layer(module: str) -> str:
    """The layer a core module belongs to: core.engine, core.data, ... (core.config is its own)."""
    return ".".join(module.split(".")[:2])


def test_the_layers_are_packages_of_modules():
    assert {layer(m) for m in MODULES} == {"core", "core.config", "core.engine", "core.data", "core.training",
                                           "core.shapes", "core.benchmarks"}
    assert [m for m in MODULES if m.count(".") == 1 and m != "core.config" and MODULES[m].name != "__init__.py"] == []


def test_every_core_module_has_a_docstring():
    assert [m for m, path in MODULES.items() if ast.get_docstring(ast.parse(path.read_text())) is None] == []


def test_the_engine_imports_nothing_from_the_other_layers():
    leaks = {m: sorted(d for d in core_imports(m) if layer(d) not in ("core.engine", "core.config"))
             for m in MODULES if layer(m) == "core.engine"}
    assert {m: d for m, d in leaks.items() if d} == {}
    assert len(leaks) >= 10  # the check looked at the engine's modules


def test_settings_and_data_sit_below_training_and_the_shapes_world():
    assert core_imports("core.config") == set()
    leaks = {m: sorted(d for d in core_imports(m) if layer(d) not in ("core.engine", "core.config", "core.data"))
             for m in MODULES if layer(m) == "core.data"}
    assert {m: d for m, d in leaks.items() if d} == {}


def test_no_layer_imports_the_benchmarks():
    assert {m: sorted(d for d in core_imports(m) if layer(d) == "core.benchmarks")
            for m in MODULES if layer(m) != "core.benchmarks" and any(layer(d) == "core.benchmarks"
                                                                      for d in core_imports(m))} == {}


def test_nothing_under_core_imports_gradio():
    assert {m for m, path in MODULES.items()
            if any(name == "gradio" or name.startswith("gradio.") for name in imported_names(path))} == set()


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of the graph (its modules, the first repeated at the end), or [] when there is none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        path.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return []


def test_find_circle_finds_one_and_only_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles_in_core():
    assert find_circle({m: core_imports(m) for m in MODULES}) == []

