"""The one data type that flows between stages: digits as uint8 images and int64 labels.

Images travel through the pipeline as uint8 arrays of shape (N, 1, 28, 28) with values
0-255 and labels as int64 arrays of shape (N,). Scaling to floats happens in the model
code, so every file on disk stays exact and compact.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_IMAGES

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784
N_CLASSES = 10
# The tutorial's CSV layout: a `label` column, then pixel0..pixel783.
LABEL_COLUMN = "label"
PIXEL_COLUMNS = [f"pixel{i}" for i in range(PIXELS)]


class Digits(NamedTuple):
    images: np.ndarray  # (N, 1, 28, 28) uint8, 0-255
    labels: np.ndarray | None  # (N,) int64 in 0-9, or None for unlabelled input
    # (N,) file names, for digits read from image files; the predictions table shows them.
    sources: list[str] | None = None


def check_digits(source: Path, digits: Digits) -> Digits:
    """The checks every input passes wherever data enters (prepare, train, predict).

    At least one and at most MAX_IMAGES images of 28x28, and labels (if any) one per
    image in 0-9: a label of 42 would otherwise fail deep in the loss, and no images would
    divide by zero in training or give a predictions table with only a header.
    """
    images, labels = digits.images, digits.labels
    if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE):
        raise PipelineError(f"{source}: images of shape {images.shape}; expected (N, 1, 28, 28)")
    if len(images) == 0:
        raise PipelineError(f"{source}: holds no images; expected at least one")
    if len(images) > MAX_IMAGES:
        raise PipelineError(f"{source}: holds {len(images)} images; expected at most {MAX_IMAGES}")
    if labels is not None:
        if labels.shape != (len(images),):
            raise PipelineError(
                f"{source}: {labels.size} labels for {len(images)} images; expected one per image"
            )
        bad = np.flatnonzero((labels < 0) | (labels >= N_CLASSES))
        if bad.size:
            raise PipelineError(
                f"{source}: image {int(bad[0])} (counted from 0) has label {labels[bad[0]]}; "
                "expected labels 0-9"
            )
    return digits
