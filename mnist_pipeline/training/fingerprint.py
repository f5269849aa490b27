"""What a training run is made with: the fingerprint a checkpoint must match to resume.

A checkpoint resumes only a run that would give the same bytes: the same params and
training data, device and processes, and the same software (torch, CUDA, cuDNN, the GPU
model and this package's code). Anything else is refused with the first difference.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import torch

from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.core.recipes import dotted
from mnist_pipeline.training.distributed import Cluster

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def made_with(
    *,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    train_path: Path,
    cluster: Cluster,
    bf16: bool,
) -> dict[str, Any]:
    """Everything that decides the run's bytes: params, training data, device, processes,
    and the software: torch, CUDA, cuDNN, the GPU model and this package's code.

    Another GPU model or library version may pick other kernels, and so other float
    rounding: resuming there would give a model that no uninterrupted run gives.
    """
    with Path(train_path).open("rb") as file:
        data_sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    on_cuda = cluster.device.type == "cuda"
    return {
        "model": model_params.model_dump(),
        "train": train_params.model_dump(),
        "runtime": {"threads": threads},
        "data_sha256": data_sha256,
        "device": cluster.device.type,
        "gpu": torch.cuda.get_device_name(cluster.device) if on_cuda else None,
        "bf16": bf16,
        "world_size": cluster.world_size,
        "versions": {
            "torch": str(torch.__version__),  # a str subclass, which weights_only refuses
            "cuda": torch.version.cuda if on_cuda else None,
            "cudnn": torch.backends.cudnn.version() if on_cuda else None,
            "code_sha256": code_version(),
        },
    }


@functools.cache
def code_version(package: Path = PACKAGE_DIR) -> str:
    """sha256 over the mnist_pipeline package's Python files (paths and contents, sorted).

    Any change to the package refuses old checkpoints, even one that cannot matter to
    training (say, in evaluate.py): training again costs less than a wrong resume.
    """
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """The first setting in which the checkpoint's run differs from this one, as a phrase."""
    saved_flat, current_flat = dotted(saved), dotted(current)
    for key in sorted(saved_flat.keys() | current_flat.keys()):
        if saved_flat.get(key) != current_flat.get(key):
            was, now = saved_flat.get(key), current_flat.get(key)
            return f"made with {key} = {was!r}, this run has {now!r}"
    return None
