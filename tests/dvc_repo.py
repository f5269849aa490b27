"""Helpers for end-to-end tests: a fresh copy of the project as its own git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

# What a fresh clone has: everything but environments, caches and pipeline outputs.
_IGNORED_NAMES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "cache",
    "tmp",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "dvclive",
)


def _not_copied(folder: str, names: list[str]) -> set[str]:
    """The ignored names, and the top-level `data/` (pipeline outputs) but not
    `mnist_pipeline/data/` (code): a name pattern alone cannot tell them apart."""
    ignored = set(_IGNORED_NAMES(folder, names))
    if Path(folder).resolve() == REPO_ROOT.resolve() and "data" in names:
        ignored.add("data")
    return ignored


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    # DVC runs `python -m stages.<name>`: make sure that is this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
    )
    return env


def _completed(repo: Path, *command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=repo, env=command_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    return result


def run(repo: Path, *command: str) -> str:
    """Run a command in `repo`, fail the test with its output if it fails, return output."""
    result = _completed(repo, *command)
    return result.stdout + result.stderr


def run_stdout(repo: Path, *command: str) -> str:
    """Like `run`, but only stdout (for --json output)."""
    return _completed(repo, *command).stdout


def fresh_repo(parent: Path, params: dict | None = None, commit: bool = True) -> Path:
    """Copy the project into `parent` as a new git repo, optionally with other params."""
    repo = parent / "mnist-pipeline"
    shutil.copytree(REPO_ROOT, repo, ignore=_not_copied)
    if params is not None:
        write_params_config(repo, params)
    run(repo, "git", "init", "-q")
    if commit:
        commit_all(repo, "fresh clone")
    return repo


def write_params_config(repo: Path, params: dict) -> None:
    """Make `params` the repo's default: conf/config.yaml (what `dvc exp run -S` composes
    params.yaml from, under DVC's Hydra composition), and params.yaml composed from it."""
    from dvc.utils.hydra import compose_and_dump

    config = {"defaults": ["_self_", {"recipe": "default"}], **params}
    (repo / "conf" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    compose_and_dump(repo / "params.yaml", str(repo / "conf"), None, "config", "", [])


def commit_all(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", message)
