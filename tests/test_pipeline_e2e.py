"""The README's workflow, for real, in a fresh git repo: dvc repro reproduces the committed
dvc.lock and leaves git clean, an idle second repro, identical hashes on `dvc repro -f`,
then `dvc exp run -S ...`, `dvc metrics diff`, and switching experiments with exp apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, reproducible_hashes
from tests.dvc_repo import commit_all, fresh_repo, run, run_stdout

pytestmark = pytest.mark.slow


def git_status(repo: Path) -> str:
    return run_stdout(repo, "git", "status", "--porcelain")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the project as its own git repo, after one `dvc repro`."""
    repo = fresh_repo(tmp_path_factory.mktemp("clone"), commit=False)
    # fresh_repo leaves out data/; a clone has its git-tracked files (.gitignore files).
    for tracked in run_stdout(REPO_ROOT, "git", "ls-files", "data").splitlines():
        (repo / tracked).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / tracked, repo / tracked)
    commit_all(repo, "fresh clone")
    run(repo, "dvc", "repro")
    return repo


def test_fresh_clone_reproduces_the_committed_lock_and_git_stays_clean(repo):
    """The committed dvc.lock's hashes, model and metrics included, on this machine too
    (mnist_pipeline/core/kernels.py pins the CPU kernels; docs/reproducibility.md)."""
    assert reproducible_hashes(repo) == reproducible_hashes(REPO_ROOT)
    assert git_status(repo) == ""


def test_repro_reaches_the_tutorials_accuracy(repo):
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["test_images"] == 1000
    assert metrics["accuracy"] >= 0.87  # the tutorial reports "almost 90%"


def test_second_repro_runs_nothing(repo):
    output = run(repo, "dvc", "repro")
    assert "Running stage" not in output
    assert "up to date" in output


def test_forced_repro_gives_identical_hashes(repo):
    before = reproducible_hashes(repo)
    metrics_before = (repo / "metrics/metrics.json").read_bytes()
    assert {"data/prepared/train.safetensors", "data/model.safetensors"} <= set(before)
    run(repo, "dvc", "repro", "-f")
    assert reproducible_hashes(repo) == before
    assert (repo / "metrics/metrics.json").read_bytes() == metrics_before
    assert git_status(repo) == ""


def test_experiment_then_metrics_diff(repo):
    assert git_status(repo) == ""  # the baseline is the commit: nothing to add
    output = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2")
    assert "Running stage 'train'" in output
    assert "Running stage 'prepare'" not in output  # a training knob must not re-prepare
    diff = run(repo, "dvc", "metrics", "diff")
    assert "accuracy" in diff


def test_switching_experiments_leaves_nothing_stale(repo):
    """exp apply switches dvclive/ as a whole: no val/ curves left from another experiment,
    so train is up to date right after, and an idle repro runs nothing."""
    commit_all(repo, "before the experiments")
    common = ["-S", "train.epochs=2"]
    run(repo, "dvc", "exp", "run", "-n", "with-val", *common, "-S", "train.val_size=100")
    run(repo, "git", "checkout", "--", ".")
    run(repo, "dvc", "checkout", "--force")
    run(repo, "dvc", "exp", "run", "-n", "no-val", *common)
    run(repo, "dvc", "exp", "apply", "with-val")
    assert (repo / "dvclive/plots/metrics/val/accuracy.tsv").is_file()
    run(repo, "dvc", "exp", "apply", "no-val")
    assert not (repo / "dvclive/plots/metrics/val").exists()
    assert "up to date" in run(repo, "dvc", "status")
    assert "Running stage" not in run(repo, "dvc", "repro")
