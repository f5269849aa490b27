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
_NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "data",
    "cache",
    "tmp",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "dvclive",
)


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
    shutil.copytree(REPO_ROOT, repo, ignore=_NOT_COPIED)
    if params is not None:
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    if commit:
        commit_all(repo, "fresh clone")
    return repo


def commit_all(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", message)
