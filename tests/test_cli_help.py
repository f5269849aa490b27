"""Every command's help, rendered at 80 columns as a terminal shows it: the `mnist-pipeline`
commands and the five `python -m stages.<name>` entry points. It wraps at the width with
no ragged lines, loses no text to markup, shows plain types; -h and --version work."""

from __future__ import annotations

import inspect
import itertools
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from tests.conftest import REPO_ROOT

WIDTH = 80
COMMANDS = typer.main.get_command(app).commands
STAGES = ("split", "prepare", "train", "predict", "evaluate")


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output


def _paragraphs(help_text: str) -> list[list[str]]:
    """The description's paragraphs (indented text between Usage and Options), as lines."""
    description = help_text.split("\nOptions:")[0].split("\n", 1)[1]
    return [block.splitlines() for block in description.strip("\n").split("\n\n")]


def check_help(help_text: str, docstring: str) -> None:
    lines = help_text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), [x for x in lines if len(x) > WIDTH]
    assert "<bool>" not in help_text
    assert "-h, --help" in help_text
    for paragraph in _paragraphs(help_text):
        # Greedy wrapping: no line could have taken the next line's first word (click
        # wraps 2 columns short of the width).
        for line, following in itertools.pairwise(paragraph):
            first_word = following.split()[0]
            assert len(line) + 1 + len(first_word) > WIDTH - 2, (line, following)
    # Every word of the docstring is shown, brackets and all: no markup ate any.
    shown = " ".join(help_text.split())
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        assert " ".join(paragraph.split()) in shown, paragraph


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_reads_well_at_80_columns(name):
    check_help(_help(name), COMMANDS[name].callback.__doc__)


def test_the_main_help_lists_every_command_within_80_columns():
    help_text = _help()
    assert all(len(line) <= WIDTH for line in help_text.splitlines())
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", help_text, flags=re.MULTILINE), name


def test_brackets_survive_in_export_help():
    assert "pip install -e '.[onnx]'" in " ".join(_help("export").split())


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_entry_point_help_reads_well_at_80_columns(stage):
    """`python -m stages.<name> -h` as DVC's users run it, in a real 80-column setting."""
    env = dict(os.environ, COLUMNS=str(WIDTH), TERM="xterm")
    done = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "-h"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: python -m stages.{stage} [OPTIONS]")
    check_help(done.stdout, COMMANDS[stage].callback.__doc__)


def test_version_comes_from_the_package_metadata():
    from importlib import metadata

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"mnist-pipeline {metadata.version('mnist-pipeline')}\n"


def test_the_checker_notices_a_ragged_wrap():
    ragged = "Usage: x\n\n  Writes a safetensors\n  model file.\n\nOptions:\n  -h, --help  Help.\n"
    with pytest.raises(AssertionError):
        check_help(ragged, "Writes a safetensors model file.")
