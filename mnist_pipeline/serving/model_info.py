"""What /model tells about the served model: its architecture, and, when dvc.lock vouches
for this exact file, the params it was trained with and whether metrics.json scores it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import yaml
from torch import nn

from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.serving.schemas import ModelInfo

# Relative to dvc.lock's folder, as dvc.yaml names it.
PREDICTIONS_IN_LOCK = "data/predictions.csv"
# What /model reads besides the model is optional: a bigger file is ignored, not read.
MAX_LOCK_BYTES = 4 * 1024 * 1024  # dvc.lock is a few KB
MAX_METRICS_BYTES = 1024 * 1024


def describe_model(
    model: nn.Module, config: ModelParams, *, model_path: Path, metrics_path: Path, lock_path: Path
) -> ModelInfo:
    stages = _read_lock(lock_path).get("stages")
    stages = stages if isinstance(stages, dict) else {}
    root = lock_path.resolve().parent  # dvc.lock names paths from the project root

    def recorded(stage: str, section: str, path: Path) -> str | None:
        """The md5 that dvc.lock records for `path` among a stage's deps or outs."""
        entries = (stages.get(stage) or {}).get(section)
        wanted = Path(os.path.relpath(path.resolve(), root)).as_posix()
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("path") == wanted:
                return entry.get("md5")
        return None

    model_md5 = _md5(model_path)
    wrote_it = model_md5 is not None and recorded("train", "outs", model_path) == model_md5
    # The chain model -> predict -> predictions -> evaluate -> metrics, all as on disk now.
    predictions_path = root / PREDICTIONS_IN_LOCK
    predictions = recorded("predict", "outs", predictions_path)
    scored_it = (
        model_md5 is not None
        and recorded("predict", "deps", model_path) == model_md5
        and predictions is not None
        and recorded("evaluate", "deps", predictions_path) == predictions
        and recorded("evaluate", "outs", metrics_path) == _md5(metrics_path)
    )
    params = (stages.get("train") or {}).get("params")
    params = params if isinstance(params, dict) else {}
    return ModelInfo(
        file=model_path.name,  # not the path: it tells a client about this machine
        arch=config.arch,
        hidden=list(config.hidden),
        dropout=config.dropout,
        channels=list(config.channels),
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        trained_with=params.get("params.yaml") if wrote_it else None,
        test_accuracy=_accuracy(metrics_path),
        metrics_match_model=scored_it,
    )


def _read_lock(path: Path) -> dict:
    """dvc.lock, or {} if it is missing or unreadable: the info is optional, serving is not."""
    data = _read_regular(path, MAX_LOCK_BYTES)
    try:
        lock = yaml.safe_load(data.decode()) if data is not None else None
    except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: bad UTF-8, huge ints
        return {}
    return lock if isinstance(lock, dict) else {}


def _md5(path: Path) -> str | None:
    """The hash dvc.lock records for a file (DVC 3: md5 of the bytes), streamed."""
    file = _open_regular(path)
    if file is None:
        return None
    with file:
        return hashlib.file_digest(file, "md5").hexdigest()


def _accuracy(path: Path) -> float | None:
    data = _read_regular(path, MAX_METRICS_BYTES)
    try:
        accuracy = json.loads(data).get("accuracy") if data is not None else None
    except (ValueError, AttributeError, RecursionError):
        return None
    return float(accuracy) if isinstance(accuracy, int | float) else None


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes, else None."""
    file = _open_regular(path)
    if file is None:
        return None
    with file:
        data = file.read(limit + 1)
    return data if len(data) <= limit else None


def _open_regular(path: Path) -> io.BufferedReader | None:
    """The file opened for reading if it is a regular file, else None. A FIFO or device
    is never opened (opening a FIFO waits for a writer: `serve` would hang)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # swapped for a FIFO since: no wait
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")
