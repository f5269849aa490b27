"""The README's workflow, for real: dvc repro, an idle second repro, identical hashes on
`dvc repro -f`, then `dvc exp run -S ...` and `dvc metrics diff`, in a fresh git repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import commit_all, fresh_repo, run

pytestmark = pytest.mark.slow


def reproducible_hashes(repo: Path) -> dict[str, str]:
    """Output hashes from dvc.lock, except logs that carry wall-clock times."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    hashes = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if "dvclive" not in out["path"] and "timing" not in out["path"]:
                hashes[out["path"]] = out["md5"]
    return hashes


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh copy of the project as its own git repo, after one `dvc repro`."""
    repo = fresh_repo(tmp_path_factory.mktemp("clone"))
    run(repo, "dvc", "repro")
    return repo


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


def test_experiment_then_metrics_diff(repo):
    commit_all(repo, "baseline run")
    output = run(repo, "dvc", "exp", "run", "-S", "train.epochs=2")
    assert "Running stage 'train'" in output
    assert "Running stage 'prepare'" not in output  # a training knob must not re-prepare
    diff = run(repo, "dvc", "metrics", "diff")
    assert "accuracy" in diff
