"""Scores of a predictions table: metrics, plot tables, and the checks that tie it to its images.

Only values that depend on the predictions go in here (no timings), so every output is
byte-identical whenever the predictions are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from mnist_pipeline.core.digits import N_CLASSES, Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.predictions import PREDICTED_COLUMN, PROBABILITY_COLUMNS, TRUE_COLUMN

# Rounded so that `dvc metrics diff` reads cleanly; 1e-4 is finer than one image in 1,000.
_DECIMALS = 4
DIGITS = list(range(N_CLASSES))


class Scored(NamedTuple):
    """The predictions table as arrays; every array has one entry per test image."""

    labels: np.ndarray  # (N,) int64 true digits
    predicted: np.ndarray  # (N,) int64 predicted digits
    probabilities: np.ndarray  # (N, 10) float64, rows sum to 1


def scored_from_table(table: pd.DataFrame) -> Scored:
    probabilities = table[PROBABILITY_COLUMNS].to_numpy(dtype=np.float64, copy=True)
    # The table stores probabilities to 6 decimals; renormalise the rounding away.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return Scored(
        labels=table[TRUE_COLUMN].to_numpy(dtype=np.int64),
        predicted=table[PREDICTED_COLUMN].to_numpy(dtype=np.int64),
        probabilities=probabilities,
    )


def _rounded(value: float) -> float:
    return round(float(value), _DECIMALS)


def compute_metrics(table: pd.DataFrame) -> dict:
    """The headline numbers: accuracy, log loss, macro F1 and the image count.

    Only these go to metrics.json, so that `dvc exp show` and `dvc metrics diff` stay
    readable; the per-digit scores are a plot table (`digit_scores_table`).
    Computed with numpy, in the very operations scikit-learn 1.x uses (`accuracy_score`,
    `log_loss`, `precision_recall_fscore_support`), so the values, and metrics.json's
    bytes, equal sklearn's (tests/test_scores.py compares them) without its 1 s import.
    A digit that is never predicted has an undefined precision; it counts as 0 (sklearn's
    `zero_division=0`) rather than raising a warning or writing NaN into the JSON.
    """
    scored = scored_from_table(table)
    labels, predicted = scored.labels, scored.predicted
    f1 = precision_recall_f1(labels, predicted)[2]  # (10,)
    return {
        "accuracy": _rounded(np.average(labels == predicted)),
        "log_loss": _rounded(log_loss(labels, scored.probabilities)),
        "macro_f1": _rounded(np.average(f1)),
        "test_images": len(labels),
    }


def precision_recall_f1(
    labels: np.ndarray, predicted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per digit 0-9: precision, recall and F1, each (10,) float64; 0 where undefined."""
    hits = np.bincount(labels[labels == predicted], minlength=N_CLASSES)  # true positives
    predicted_count = np.bincount(predicted, minlength=N_CLASSES)
    true_count = np.bincount(labels, minlength=N_CLASSES)
    # F1 as sklearn writes it: 2 tp / (true + predicted), equal to 2pr / (p + r).
    return (
        _divide(hits, predicted_count),
        _divide(hits, true_count),
        _divide(2.0 * hits, true_count.astype(np.float64) + predicted_count),
    )


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0 where the denominator is 0."""
    undefined = denominator == 0
    ratio = numerator / np.where(undefined, 1, denominator)
    ratio[undefined] = 0.0
    return ratio


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log probability of the true digit; probabilities (N, 10) clipped to
    [eps, 1 - eps] so that a confident mistake costs a large, finite loss."""
    eps = np.finfo(probabilities.dtype).eps
    true_probability = probabilities[np.arange(len(labels)), labels]  # (N,)
    return float(np.average(-np.log(np.clip(true_probability, eps, 1 - eps))))


def confusion_table(scored: Scored) -> pd.DataFrame:
    """One row per test image, as DVC's `confusion` template wants: actual, predicted."""
    return pd.DataFrame({"actual": scored.labels, "predicted": scored.predicted})


def digit_scores_table(scored: Scored) -> pd.DataFrame:
    """Per digit: the share of its test images classified correctly (its recall, the
    bar chart's `accuracy`), its precision and F1, and its count of test images."""
    precision, recall, f1 = precision_recall_f1(scored.labels, scored.predicted)  # (10,) each
    # A digit absent from the test set has no scores; NaN would break the plot, so 0.
    return pd.DataFrame(
        {
            "digit": DIGITS,
            "accuracy": np.round(recall, _DECIMALS),
            "precision": np.round(precision, _DECIMALS),
            "f1": np.round(f1, _DECIMALS),
            "images": np.bincount(scored.labels, minlength=N_CLASSES),
        }
    )


def check_matches(predictions_path: Path, scored: Scored, test_path: Path, test: Digits) -> None:
    """The gallery shows test images next to their predictions: both files must agree."""
    if len(test.images) != len(scored.labels):
        raise PipelineError(
            f"{predictions_path}: has {len(scored.labels)} rows but {test_path} holds "
            f"{len(test.images)} images; expected one prediction per test image, in order"
        )
    if test.labels is None:
        raise PipelineError(f"{test_path}: holds no labels; expected labelled test digits")
    mismatch = np.flatnonzero(test.labels != scored.labels)
    if mismatch.size:
        row = int(mismatch[0])
        raise PipelineError(
            f"{predictions_path}: line {row + 2}, column '{TRUE_COLUMN}': got "
            f"{scored.labels[row]} but image {row} of {test_path} is labelled "
            f"{test.labels[row]}; expected the predictions of that test file, in order"
        )


def metrics_json(metrics: dict) -> str:
    return json.dumps(metrics, indent=2, sort_keys=True) + "\n"
