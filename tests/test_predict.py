"""Predictions: the tutorial's table, made with dropout off."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.core.predictions import PROBABILITY_COLUMNS
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.model.predict import class_probabilities, predictions_table


@pytest.fixture
def model():
    return build_model(ModelParams(arch="mlp", hidden=[32], dropout=0.5, channels=[]))


def test_probabilities_are_deterministic_because_dropout_is_off(model, digits):
    model.train()  # even if handed a model in training mode
    first = class_probabilities(model, digits.images)
    second = class_probabilities(model, digits.images)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (len(digits.images), 10)
    np.testing.assert_allclose(first.sum(axis=1), 1.0, rtol=1e-5)


def test_table_has_the_tutorials_columns(model, digits):
    probabilities = class_probabilities(model, digits.images)
    table = predictions_table(probabilities, digits.labels)
    assert list(table.columns[:3]) == ["Predicted Value", "True Value", "Confidence"]
    assert list(table.columns[3:]) == PROBABILITY_COLUMNS
    np.testing.assert_array_equal(table["Predicted Value"], probabilities.argmax(axis=1))
    np.testing.assert_array_equal(table["True Value"], digits.labels)
    np.testing.assert_allclose(table["Confidence"], probabilities.max(axis=1))


def test_unlabelled_input_has_no_true_value(model, digits):
    table = predictions_table(class_probabilities(model, digits.images), labels=None)
    assert "True Value" not in table.columns
    assert len(table) == len(digits.images)
