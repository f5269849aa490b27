"""Shared fixtures: tiny synthetic digits and params files, so tests run in seconds."""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.kernels import pin_portable_kernels
from mnist_pipeline.core.params import ModelParams, load_params

# As the entry points do, before anything imports torch (nothing above does): tests that
# train in this process run the same kernels as `dvc repro` (mnist_pipeline/core/kernels.py).
pin_portable_kernels()

REPO_ROOT = Path(__file__).resolve().parents[1]

# Test recipes shared by the training, checkpoint and distributed tests.
# A small mlp, and the repository's train section as a dict to override.
TINY_MLP = ModelParams(arch="mlp", hidden=[32, 16], dropout=0.2, channels=[8])
RECIPE = load_params(REPO_ROOT / "params.yaml").train.model_dump()
TINY_CNN = {"arch": "cnn", "channels": [4, 8], "hidden": [16], "dropout": 0.1}
# Every option away from its default at once: mini-batches, adamw, onecycle, smoothing,
# a validation split, keep=best and augmentation.
FANCY_TRAIN = {
    "epochs": 3,
    "lr": 0.01,
    "batch_size": 16,
    "optimizer": "adamw",
    "weight_decay": 0.01,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    "val_size": 20,
    "keep": "best",
    "augment": {"enabled": True, "rotation": 15.0, "translation": 0.1, "scale": [0.9, 1.1]},
}


def synthetic_digits(n_images: int = 60, seed: int = 0) -> Digits:
    """Learnable fake digits: each class lights up its own horizontal band, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_images, dtype=np.int64) % 10
    images = rng.integers(0, 60, size=(n_images, 1, 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, 0, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return Digits(images, labels)


@pytest.fixture
def digits() -> Digits:
    return synthetic_digits()


@pytest.fixture
def repo_params() -> dict:
    """The repository's params.yaml as a plain dict (copy it before changing it)."""
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.fixture
def tiny_params(repo_params: dict) -> dict:
    """The real params with sizes and epochs small enough for a unit test."""
    params = copy.deepcopy(repo_params)
    params["data"].update(train_size=60, test_size=40)
    params["model"]["hidden"] = [32, 16]
    params["train"]["epochs"] = 3
    params["runtime"]["threads"] = 1
    return params


def write_params(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def replace_cell(path: Path, line: int, column: int, value: str) -> None:
    """Overwrite one cell of a CSV file; `line` counts from 1, the header included."""
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


# The network of the tiny checkpoints below.
TINY_CHECKPOINT_MODEL = {"arch": "mlp", "hidden": [8], "dropout": 0.0, "channels": [1]}


def tiny_checkpoint(epoch: int, model: dict = TINY_CHECKPOINT_MODEL):
    """The real state after `epoch` epochs of a tiny run of the network `model` describes
    (checkpoints are validated on load, so a made-up one would be ignored)."""
    from mnist_pipeline.core.params import parse_params
    from mnist_pipeline.training.loop import train_model

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["model"].update(model)
    raw["train"].update(epochs=epoch)
    params = parse_params(raw)
    states: list = []
    train_model(synthetic_digits(20), params.model, params.train, 1, save_checkpoint=states.append)
    return states[-1]


def refused(call, *fragments: str) -> str:
    """Run `call`; it must raise one PipelineError of one line holding every fragment."""
    with pytest.raises(PipelineError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 600, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def reproducible_hashes(repo: Path) -> dict[str, str]:
    """Every output hash in dvc.lock: all are byte-stable (wall-clock files are dvcignored)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage["outs"]}


def training_env(**extra: str) -> dict[str, str]:
    """The environment of a training subprocess: this checkout importable, this venv's
    python and torchrun first on PATH, and a checkpoint after every epoch (not every 10 s
    of training), so that a kill a few seconds in finds one."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MNIST_PIPELINE_CHECKPOINT_SECONDS="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env | extra


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts each worker in its own
    session, so killing torchrun's process group would leave them running)."""
    children = []
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.is_dir() else []:
        with contextlib.suppress(OSError):  # the task ended meanwhile
            children += [int(child) for child in (task / "children").read_text().split()]
    for child in children:
        kill_tree(child)
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.kill(pid, signal.SIGKILL)
