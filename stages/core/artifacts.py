"""Artifact I/O: atomic writes, and the prepared tensors that `prepare` writes.

The input formats (CSV, IDX, image folders) live in stages/formats/.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stages.core.digits import IMAGE_SIDE, Digits
from stages.core.errors import PipelineError


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; move it over `path` only if the block succeeds.

    A stage that fails half-way therefore leaves the previous artifact untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_prepared(path: Path, digits: Digits) -> None:
    """Write prepared tensors as safetensors (no pickle: safe to load from anywhere)."""
    from safetensors.numpy import save_file

    if digits.labels is None:
        raise ValueError("prepared data must be labelled")
    tensors = {"images": np.ascontiguousarray(digits.images), "labels": digits.labels}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp))


def load_prepared(path: Path) -> Digits:
    """Read tensors written by `save_prepared`, checking their shapes and types."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file; run `dvc repro prepare` first")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PipelineError(f"{path}: not a safetensors file of prepared digits ({err})") from None
    images, labels = tensors.get("images"), tensors.get("labels")
    expected = "uint8 images (N, 1, 28, 28) and int64 labels (N,)"
    if (
        images is None
        or labels is None
        or images.dtype != np.uint8
        or images.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE)
        or labels.dtype != np.int64
        or labels.shape != (images.shape[0],)
    ):
        raise PipelineError(f"{path}: expected {expected}")
    return Digits(images, labels)
