"""Comparing experiments for real, in a fresh git repo with tiny params: `dvc metrics
show/diff` print no warning (fresh clone, after `dvc repro`, after `dvc exp apply`), the
README's comparison table fits 120 columns, and a failed experiment (a bad param, a crash
inside train) loses nothing: the one command its error line names restores everything."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.dvc_repo import command_env, commit_all, fresh_repo, run, run_stdout

pytestmark = pytest.mark.slow

RESTORE = "mnist-pipeline restore"
# The README's comparison command (tests/test_readme.py runs its options too).
COMPARE = ["dvc", "exp", "show", "--only-changed", "--drop", "Created|data/|stages|mnist_pipeline"]

# Loaded by every Python process of the failing run: in DVC's train stage only, it makes
# the second epoch raise, as a bug in the training code would (after epoch 1's files).
CRASH_HOOK = """
import os
if os.environ.get("DVC_STAGE") == "train":
    import importlib.abc, importlib.util, sys

    def _crash_in_epoch_2(module):
        done = module.TrainingLog.epoch_done

        def epoch_done(self, stats):
            if stats.epoch == 2:
                raise RuntimeError("simulated crash in epoch 2")
            done(self, stats)

        module.TrainingLog.epoch_done = epoch_done

    class _Patching(importlib.abc.Loader):
        def __init__(self, loader):
            self.loader = loader

        def create_module(self, spec):
            return self.loader.create_module(spec)

        def exec_module(self, module):
            self.loader.exec_module(module)
            _crash_in_epoch_2(module)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "mnist_pipeline.training.log":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            spec.loader = _Patching(spec.loader)
            return spec

    sys.meta_path.insert(0, _Finder())
"""


def _failing(repo: Path, *command: str, env: dict | None = None) -> str:
    result = subprocess.run(
        command, cwd=repo, env=env or command_env(), capture_output=True, text=True, check=False
    )
    assert result.returncode != 0, result.stdout
    return result.stdout + result.stderr


def _quiet(output: str) -> str:
    assert "WARNING" not in output, output
    assert "failed to load" not in output.lower(), output
    return output


def _state(repo: Path) -> tuple[str, str, bytes]:
    """git status, dvc status and the model's bytes: all that must come back."""
    model = (repo / "data/model.safetensors").read_bytes()
    return run_stdout(repo, "git", "status", "--porcelain"), run(repo, "dvc", "status"), model


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(train_size=300, test_size=200)
    params["model"]["hidden"] = [32]
    params["train"]["epochs"] = 4
    repo = fresh_repo(tmp_path_factory.mktemp("experiments"), params, commit=False)
    for tracked in run_stdout(REPO_ROOT, "git", "ls-files", "data").splitlines():
        (repo / tracked).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / tracked, repo / tracked)
    commit_all(repo, "fresh clone")
    return repo


def test_metrics_commands_print_no_warning(repo):
    for command in (["dvc", "metrics", "show"], ["dvc", "metrics", "diff"]):
        _quiet(run(repo, *command))  # a fresh clone: the committed metrics, from git
    run(repo, "dvc", "repro")
    shown = _quiet(run(repo, "dvc", "metrics", "show"))
    assert "train.accuracy" in shown
    assert "timing" not in shown  # wall-clock values are no metric
    _quiet(run(repo, "dvc", "metrics", "diff"))
    commit_all(repo, "baseline")
    for lr in ("0.003", "0.01"):
        run(repo, "dvc", "exp", "run", "-n", f"lr-{lr}", "-S", f"train.lr={lr}")
    run(repo, "dvc", "exp", "apply", "lr-0.003")
    _quiet(run(repo, "dvc", "metrics", "show"))
    assert "train.accuracy" in _quiet(run(repo, "dvc", "metrics", "diff"))


def test_the_comparison_table_fits_120_columns(repo):
    run(repo, "dvc", "exp", "run", "-n", "epochs-6", "-S", "train.epochs=6")
    env = command_env() | {"COLUMNS": "120"}
    table = subprocess.run(
        COMPARE, cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120, table
    assert "…" not in table
    assert "!" not in table
    for column in ("accuracy", "train.lr", "train.epochs"):
        assert column in table
    for name in ("lr-0.003", "lr-0.01", "epochs-6"):
        assert re.search(rf"\b{re.escape(name)}\b", table), name
    csv = run_stdout(repo, "dvc", "exp", "show", "--csv").splitlines()[0].split(",")
    assert len(csv) <= 54  # 5 of DVC's, 8 metrics, 33 params, 8 deps (was 101)


def test_a_bad_param_loses_nothing(repo):
    run(repo, "python", "-m", "mnist_pipeline", "restore")
    before = _state(repo)
    output = _failing(repo, "dvc", "exp", "run", "-S", "train.lr=-1")
    error = next(line for line in output.splitlines() if line.startswith("error: params.yaml"))
    assert "train.lr" in error
    assert RESTORE in error
    assert not (repo / "data/model.safetensors").exists()  # DVC deleted it before train ran
    run(repo, "python", "-m", "mnist_pipeline", "restore")
    assert _state(repo) == before
    assert before[0] == ""
    assert "up to date" in before[1]


def test_a_crash_inside_train_loses_nothing(repo, tmp_path):
    run(repo, "python", "-m", "mnist_pipeline", "restore")
    before = _state(repo)
    (tmp_path / "sitecustomize.py").write_text(CRASH_HOOK)
    env = command_env() | {"PYTHONPATH": str(tmp_path)}
    output = _failing(repo, "dvc", "exp", "run", "-S", "train.epochs=3", env=env)
    assert "simulated crash in epoch 2" in output  # the traceback of the bug
    assert "error: python -m stages.train crashed (to get the last commit's" in output
    assert RESTORE in output
    assert (repo / "dvclive/plots/metrics/train/loss.tsv").read_text().count("\n") == 2
    run(repo, "python", "-m", "mnist_pipeline", "restore")
    assert _state(repo) == before
    assert [path.name for path in (repo / "data/checkpoint").iterdir()] == [".gitignore"]
