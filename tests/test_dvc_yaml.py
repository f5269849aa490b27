"""dvc.yaml and the CLI agree: stages are named after commands, paths match defaults."""

from __future__ import annotations

import inspect

import typer
import yaml

from stages.cli import app
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
        assert stage["cmd"] == f"python -m stages {name}"
        assert name in commands


def test_cli_default_paths_are_the_paths_in_dvc_yaml():
    for name, stage in PIPELINE.items():
        data_paths = {
            path
            for path in _stage_paths(stage)
            if not path.startswith(("stages/", "${"))  # ${...}: paths that come from params
        }
        assert _path_defaults(name) == data_paths, name


def test_paths_from_params_are_declared_params_of_their_stage():
    for name, stage in PIPELINE.items():
        for path in _stage_paths(stage):
            if path.startswith("${"):
                assert path.removeprefix("${").removesuffix("}") in stage["params"], name


def test_every_stage_depends_on_its_own_code():
    for name, stage in PIPELINE.items():
        assert f"stages/{name}.py" in stage["deps"], name
        assert (REPO_ROOT / "stages" / f"{name}.py").is_file()


def test_commands_have_a_docstring_as_help():
    for command in typer.main.get_command(app).commands.values():
        assert inspect.cleandoc(command.help or "")
