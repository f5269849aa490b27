"""Every command in the README and docs/ exists, with the options it names.

The shell blocks of README.md and docs/*.md are parsed line by line: `mnist-pipeline X`,
`python -m mnist_pipeline X` and `python -m stages.X` must name a CLI command and only its
options; `dvc X` a DVC command whose help lists the options used; `python bench/x.py` an
existing script that defines the options used.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import typer

from mnist_pipeline.cli.app import app
from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.DOTALL)


def shell_commands() -> list[tuple[str, list[str]]]:
    """(page name, argv) for every command line of every shell block; comments dropped."""
    found = []
    for page in PAGES:
        for block in _BLOCK.findall(page.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                if not line or line.startswith("#"):
                    continue
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                argv: list[str] = []
                for token in [*lexer, ";"]:  # operators (&&, |, ;) end a command
                    if token in {"&&", "||", "|", ";", "&"}:
                        if argv:
                            found.append((page.name, argv))
                        argv = []
                    else:
                        argv.append(token)
    return found


COMMANDS = shell_commands()


def _options(argv: list[str]) -> list[str]:
    return [arg.split("=")[0] for arg in argv if arg.startswith("--")]


def _cli_commands() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {
        name: {opt for param in command.params for opt in getattr(param, "opts", [])} | {"--help"}
        for name, command in group.commands.items()
    }


def test_the_pages_have_commands_to_check():
    names = {argv[0] for _, argv in COMMANDS}
    assert {"dvc", "mnist-pipeline", "pytest"} <= names


def test_cli_commands_and_options_exist():
    commands = _cli_commands()
    for page, argv in COMMANDS:
        if argv[0] in ("python", "python3") and argv[1:3] == ["-m", "mnist_pipeline"]:
            argv = ["mnist-pipeline", *argv[3:]]
        elif argv[0] in ("python", "python3") and argv[1] == "-m" and argv[2][:7] == "stages.":
            argv = ["mnist-pipeline", argv[2].removeprefix("stages."), *argv[3:]]
        if argv[0] != "mnist-pipeline" or len(argv) < 2 or argv[1].startswith("-"):
            continue
        assert argv[1] in commands, f"{page}: unknown command in {shlex.join(argv)}"
        for option in _options(argv[2:]):
            assert option in commands[argv[1]], f"{page}: unknown option in {shlex.join(argv)}"


def test_bench_scripts_exist_with_their_options():
    """A script's options are the ones up to the next script: `bench/reference_cpu.sh
    python bench/x.py --n 3` gives --n to bench/x.py, not to the wrapper."""
    for page, argv in COMMANDS:
        at = [i for i, arg in enumerate(argv) if arg.startswith("bench/")]
        for start, end in zip(at, [*at[1:], len(argv)][: len(at)], strict=True):
            script = argv[start]
            path = REPO_ROOT / script
            assert path.is_file(), f"{page}: {script} does not exist"
            source = path.read_text()
            for option in _options(argv[start + 1 : end]):
                assert f'"{option}"' in source, f"{page}: {script} has no option {option}"


@pytest.mark.slow
def test_dvc_commands_and_options_exist():
    checked: dict[tuple[str, ...], str] = {}
    for page, argv in COMMANDS:
        if argv[0] != "dvc":
            continue
        words = tuple(arg for arg in argv[1:3] if re.fullmatch(r"[a-z]+", arg))
        # `dvc exp run ...`: the subcommand path is the leading plain words that dvc knows.
        for depth in (2, 1):
            path = words[:depth]
            if path not in checked:
                result = subprocess.run(
                    [sys.executable, "-m", "dvc", *path, "--help"],
                    capture_output=True, text=True, check=False, cwd=REPO_ROOT,
                )  # fmt: skip
                checked[path] = result.stdout if result.returncode == 0 else ""
            usage = checked[path].split("\n", 1)[0]
            if checked[path] and (depth == 1 or path[-1] in usage.split()):
                break
        help_text = checked[path]
        assert help_text, f"{page}: not a dvc command: {shlex.join(argv)}"
        for option in _options(argv[1:]):
            assert option in help_text, f"{page}: dvc has no {option} in {shlex.join(argv)}"
