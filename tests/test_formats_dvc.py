"""Switching the pipeline to the user's own IDX files is a params.yaml edit, tracked by DVC."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.formats.idx import write_idx_digits

REPO_ROOT = Path(__file__).resolve().parents[1]


def _run(repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _idx_files(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(30, 1, 28, 28), dtype=np.uint8)
    digits = Digits(images, np.arange(30, dtype=np.int64) % 10)
    for split in ("train", "t10k"):
        write_idx_digits(
            folder / f"{split}-images-idx3-ubyte.gz",
            folder / f"{split}-labels-idx1-ubyte.gz",
            digits,
        )


@pytest.mark.slow
def test_idx_files_named_in_params_are_dvc_dependencies(tmp_path):
    repo, mnist = tmp_path / "repo", tmp_path / "mnist"  # the data lives outside the repo
    repo.mkdir()
    mnist.mkdir()
    for name in ("stages", "mnist_pipeline", "dvc.yaml", "params.yaml", "pyproject.toml"):
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy
        copy(REPO_ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run(repo, "dvc", "init", "-q")
    _idx_files(mnist, seed=0)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["inputs"] = {
        "train": str(mnist / "train-images-idx3-ubyte.gz"),
        "test": str(mnist / "t10k-images-idx3-ubyte.gz"),
        "train_labels": str(mnist / "train-labels-idx1-ubyte.gz"),
        "test_labels": str(mnist / "t10k-labels-idx1-ubyte.gz"),
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    assert "Running stage 'prepare'" in _run(repo, "dvc", "repro", "prepare")
    assert "Running stage 'prepare'" not in _run(repo, "dvc", "repro", "prepare")
    _idx_files(mnist, seed=1)  # the user replaces the files: prepare runs again
    assert "Running stage 'prepare'" in _run(repo, "dvc", "repro", "prepare")
