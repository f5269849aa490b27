"""The layout keeps its promises: core imports nothing above it, no import cycles, no
helper package imports an entry point, and no module grows past ~300 lines
(docs/architecture.md)."""

from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mnist_pipeline"
MAX_LINES = 320
# Entry points that a package must never import, lazily or not: the stage modules (they
# pin kernels and parse argv), and for the library packages also the CLI layer.
FORBIDDEN = {
    "mnist_pipeline": ("stages",),
    **{
        f"mnist_pipeline.{package}": ("stages", "mnist_pipeline.cli")
        for package in ("core", "data", "formats", "model", "training", "reports", "serving")
    },
}


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
        assert lines <= MAX_LINES, f"{relative}: {lines} lines"


def forbidden_imports(module: str, source: str) -> list[str]:
    """What `module` imports anywhere in `source` (functions too) that FORBIDDEN refuses it."""
    refused = next(
        (names for package, names in sorted(FORBIDDEN.items(), reverse=True)
         if module == package or module.startswith(f"{package}.")),
        (),
    )  # fmt: skip
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found for bad in refused if name == bad or name.startswith(f"{bad}.")]


def test_no_package_imports_an_entry_point():
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        assert not forbidden_imports(module, path.read_text()), module


def test_the_entry_point_check_finds_lazy_imports():
    lazy = "def f():\n    from stages.predict import main\n    import mnist_pipeline.cli.app\n"
    assert forbidden_imports("mnist_pipeline.serving.x", lazy) == [
        "stages.predict",
        "mnist_pipeline.cli.app",
    ]
    assert forbidden_imports("mnist_pipeline.cli.app", lazy) == ["stages.predict"]
