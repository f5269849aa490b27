"""The one data type that flows between stages: digits as uint8 images and int64 labels.

Images travel through the pipeline as uint8 arrays of shape (N, 1, 28, 28) with values
0-255 and labels as int64 arrays of shape (N,). Scaling to floats happens in the model
code, so every file on disk stays exact and compact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

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
