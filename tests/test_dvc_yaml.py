"""dvc.yaml and the CLI agree: stages are named after commands, paths match defaults, and
each stage's code deps cover every project file that its command can import."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import typer
import yaml

from mnist_pipeline.cli.app import app
from tests.conftest import REPO_ROOT

PIPELINE = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def _path_defaults(command_name: str) -> set[str]:
    command = typer.main.get_command(app).commands[command_name]
    return {
        str(option.default)
        for option in command.params
        if option.name != "params" and option.default is not None
    }


def _stage_paths(stage: dict) -> set[str]:
    paths = set()
    for entry in stage.get("deps", []) + stage.get("outs", []) + stage.get("metrics", []):
        paths.add(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


def test_every_stage_calls_the_command_of_its_name():
    commands = set(typer.main.get_command(app).commands)
    for name, stage in PIPELINE.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert name in commands


def test_cli_default_paths_are_the_paths_in_dvc_yaml():
    for name, stage in PIPELINE.items():
        data_paths = {
            path
            for path in _stage_paths(stage)
            # ${...}: paths that come from params; the rest of the deps are the code
            if path not in ("stages", "mnist_pipeline") and not path.startswith("${")
        }
        assert _path_defaults(name) == data_paths, name


def test_paths_from_params_are_declared_params_of_their_stage():
    for name, stage in PIPELINE.items():
        for path in _stage_paths(stage):
            if path.startswith("${"):
                assert path.removeprefix("${").removesuffix("}") in stage["params"], name


def _module_file(module: str) -> Path | None:
    """mnist_pipeline.x.y -> its file in this checkout (a package's __init__.py); None if not
    ours."""
    if module.split(".")[0] not in ("stages", "mnist_pipeline"):
        return None
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Every module an AST imports, anywhere in it (lazy imports inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return found


def _with_parents(module: str) -> list[str]:
    """Importing mnist_pipeline.a.b runs mnist_pipeline/__init__.py and mnist_pipeline/a/__init__.py
    first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _project_files_imported_by(stage_name: str) -> set[Path]:
    """The closure of project files that `python -m stages.<stage_name>` can import.

    Starts from the entry point, stages/<stage_name>.py, and follows every import (lazy
    ones included) of every project module reached, except in the module of the stage
    commands: there only its module level and this stage's own command count, not the
    other commands' lazy imports.
    """
    commands_tree = ast.parse((REPO_ROOT / "mnist_pipeline/cli/pipeline.py").read_text())
    command_bodies = [
        node
        for node in commands_tree.body
        if isinstance(node, ast.FunctionDef) and node.name == stage_name
    ]
    module_level = ast.Module(
        body=[node for node in commands_tree.body if isinstance(node, ast.Import | ast.ImportFrom)],
        type_ignores=[],
    )
    todo = {f"stages.{stage_name}", "mnist_pipeline.cli.pipeline"}
    todo |= _imported_modules(module_level, "mnist_pipeline.cli")
    for body in command_bodies:
        todo |= _imported_modules(body, "mnist_pipeline.cli")
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        module = todo.pop()
        for name in _with_parents(module):
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(name)
            if path is None:
                continue
            files.add(path)
            if name == "mnist_pipeline.cli.pipeline":
                continue  # only its module level and this stage's command count (above)
            is_package = path.name == "__init__.py"
            package = name if is_package else name.rpartition(".")[0]
            todo |= _imported_modules(ast.parse(path.read_text()), package)
    return files


def _covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO_ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_stage_depends_on_all_the_code_its_command_imports():
    for name, stage in PIPELINE.items():
        imported = _project_files_imported_by(name)
        assert REPO_ROOT / "stages" / f"{name}.py" in imported, name
        missing = sorted(
            path.relative_to(REPO_ROOT).as_posix()
            for path in imported
            if not _covered(path, stage["deps"])
        )
        assert not missing, f"stage {name}: deps miss {missing}"


def test_the_import_check_notices_a_missing_dep():
    """The check itself can fail: train imports the training package, so deps that name
    every folder but that one leave files uncovered (dvc.yaml names the whole library)."""
    training_files = [
        path for path in _project_files_imported_by("train") if "training" in path.parts
    ]
    assert training_files
    others = ["stages", *(f"mnist_pipeline/{name}" for name in ("cli", "core", "model"))]
    assert not any(_covered(path, others) for path in training_files)
    assert all(_covered(path, PIPELINE["train"]["deps"]) for path in training_files)


def test_code_deps_exist():
    for name, stage in PIPELINE.items():
        for dep in stage["deps"]:
            if dep.startswith(("stages", "mnist_pipeline")):
                assert (REPO_ROOT / dep).exists(), f"{name}: {dep}"


def test_commands_have_a_docstring_as_help():
    for command in typer.main.get_command(app).commands.values():
        assert inspect.cleandoc(command.help or "")
