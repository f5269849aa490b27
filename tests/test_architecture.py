"""The layout keeps its promises: core imports nothing above it, no import cycles, and no
module grows past ~300 lines (docs/architecture.md)."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mnist_pipeline"
# cli.py is a flat list of thin typer commands, one per stage plus serve/export/plots-template.
LONGEST = {"mnist_pipeline/cli/": 400}
MAX_LINES = 320


def _module_name(path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(path) -> set[str]:
    """Project modules a file imports when it is imported (not the lazy ones in functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {_module_name(path) for path in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    return {_module_name(path): _module_level_imports(path) for path in PACKAGE.rglob("*.py")}


def test_core_imports_nothing_above_it():
    for module, imports in _graph().items():
        if module.startswith("mnist_pipeline.core"):
            above = {name for name in imports if not name.startswith("mnist_pipeline.core")}
            assert not above, f"{module} imports {sorted(above)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of imports as [a, b, ..., a], or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in done:
            return None
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            if cycle := visit(imported):
                return cycle
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if cycle := visit(module):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(_graph()) is None


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_is_too_long():
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(REPO_ROOT).as_posix()
        lines = len(path.read_text().splitlines())
        assert lines <= LONGEST.get(relative, MAX_LINES), f"{relative}: {lines} lines"
