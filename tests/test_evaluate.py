"""Evaluation: metrics computed from the predictions table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.predictions import write_predictions
from mnist_pipeline.model.predict import predictions_table
from mnist_pipeline.reports.evaluate import run
from mnist_pipeline.reports.scores import compute_metrics


def _table(true_labels, predicted_labels):
    probabilities = np.full((len(true_labels), 10), 0.02, dtype=np.float32)
    probabilities[np.arange(len(true_labels)), predicted_labels] = 0.82
    return predictions_table(probabilities, np.asarray(true_labels))


def test_accuracy_is_the_fraction_of_correct_rows():
    metrics = compute_metrics(_table([0, 1, 2, 3], [0, 1, 2, 9]))
    assert metrics["accuracy"] == 0.75
    assert metrics["test_images"] == 4
    assert metrics["log_loss"] > 0


def test_metrics_file_is_stable_json(tmp_path):
    predictions = tmp_path / "predictions.csv"
    write_predictions(predictions, _table([5, 5, 7], [5, 1, 7]))
    metrics_path = tmp_path / "metrics.json"
    run(predictions, metrics_path)
    first = metrics_path.read_bytes()
    run(predictions, metrics_path)
    assert metrics_path.read_bytes() == first
    assert json.loads(first)["accuracy"] == pytest.approx(2 / 3, abs=1e-4)


def test_unlabelled_predictions_cannot_be_evaluated(tmp_path):
    predictions = tmp_path / "predictions.csv"
    probabilities = np.full((2, 10), 0.1, dtype=np.float32)
    write_predictions(predictions, predictions_table(probabilities, labels=None))
    with pytest.raises(PipelineError, match="missing column 'True Value'"):
        run(predictions, tmp_path / "metrics.json")
