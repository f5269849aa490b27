"""The numpy metrics equal scikit-learn's, value for value (sklearn: test-time only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mnist_pipeline.core.predictions import PREDICTED_COLUMN, PROBABILITY_COLUMNS, TRUE_COLUMN
from mnist_pipeline.reports.scores import DIGITS, compute_metrics, log_loss, precision_recall_f1


def _random_predictions(seed: int, size: int, missing: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size)
    hit = rng.random(size) < 0.8
    predicted = np.where(hit, labels, rng.integers(0, 10, size))
    for digit in missing:  # a digit never predicted, and one never present
        predicted[predicted == digit] = (digit + 1) % 10
    probabilities = rng.dirichlet(np.ones(10), size)
    probabilities[np.arange(size), 0] = 0.0  # some zeros: the clipping matters
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return labels, predicted, probabilities


@pytest.mark.parametrize(
    ("seed", "size", "missing"), [(0, 1000, ()), (1, 37, (3,)), (2, 5, (0, 7))]
)
def test_metrics_equal_sklearns_bit_for_bit(seed, size, missing):
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    from sklearn.metrics import log_loss as sklearn_log_loss

    labels, predicted, probabilities = _random_predictions(seed, size, missing)
    ours = precision_recall_f1(labels, predicted)
    theirs = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, average=None, zero_division=0
    )
    for mine, expected in zip(ours, theirs[:3], strict=True):
        np.testing.assert_array_equal(mine, expected)
    macro = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, average="macro", zero_division=0
    )
    assert [float(np.average(values)) for values in ours] == list(macro[:3])
    assert float(np.average(labels == predicted)) == accuracy_score(labels, predicted)
    assert log_loss(labels, probabilities) == sklearn_log_loss(labels, probabilities, labels=DIGITS)


def test_compute_metrics_reads_the_table():
    labels, predicted, probabilities = _random_predictions(4, 200)
    table = pd.DataFrame(probabilities, columns=PROBABILITY_COLUMNS)
    table[PREDICTED_COLUMN], table[TRUE_COLUMN] = predicted, labels
    metrics = compute_metrics(table)
    assert metrics["test_images"] == 200
    assert metrics["accuracy"] == round(float(np.mean(labels == predicted)), 4)
    f1 = precision_recall_f1(labels, predicted)[2]
    assert metrics["macro_f1"] == round(float(np.average(f1)), 4)
