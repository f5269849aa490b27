"""Models for the serving and export tests: trained once per session, written as model files.

`tiny_model_file` is fast and reads nothing real (synthetic digits); `digit_model_file`
is a small cnn trained on the real bundled MNIST digits, good enough to read a digit drawn
in the browser (a few seconds of training).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.params import DataParams, ModelParams, TrainParams
from mnist_pipeline.model.model_file import save_model
from mnist_pipeline.training.loop import train_model
from tests.conftest import REPO_ROOT, synthetic_digits

_RECIPE = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["train"]


def train_to_file(path: Path, digits: Digits, model: dict, train: dict, threads: int = 1) -> Path:
    settings = TrainParams.model_validate(_RECIPE | train)
    result = train_model(digits, ModelParams.model_validate(model), settings, threads)
    save_model(result.model, result.config, path)
    return path


def tiny_model_file(path: Path, arch: str = "mlp") -> Path:
    """A few epochs on synthetic digits: the model works, its accuracy does not matter."""
    model = {"arch": arch, "hidden": [16], "dropout": 0.2, "channels": [4, 8]}
    return train_to_file(path, synthetic_digits(60), model, {"epochs": 2})


def bundled_split() -> tuple[Digits, Digits]:
    """The pipeline's default split of the bundled digits (params.yaml's data section)."""
    from mnist_pipeline.data.split import load_bundled_digits, split_digits

    data = DataParams.model_validate(
        yaml.safe_load((REPO_ROOT / "params.yaml").read_text())["data"] | {"train_size": 4000}
    )
    return split_digits(load_bundled_digits(), data)


def digit_model_file(path: Path) -> Path:
    """A small cnn on 4,000 real digits with augmentation: reads hand-drawn digits."""
    train, _ = bundled_split()
    model = {"arch": "cnn", "hidden": [32], "dropout": 0.2, "channels": [8, 16]}
    recipe = {
        "epochs": 5,
        "lr": 0.005,
        "batch_size": 64,
        "schedule": "onecycle",
        "augment": _RECIPE["augment"] | {"enabled": True},
    }
    return train_to_file(path, train, model, recipe)  # 1 thread: 2 wait on a busy machine
