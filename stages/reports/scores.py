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

from stages.core.digits import N_CLASSES, Digits
from stages.core.errors import PipelineError
from stages.core.predictions import PREDICTED_COLUMN, PROBABILITY_COLUMNS, TRUE_COLUMN

# Rounded so that `dvc metrics diff` reads cleanly; 1e-4 is finer than one image in 1,000.
_DECIMALS = 4
DIGITS = list(range(N_CLASSES))


class Scored(NamedTuple):
    """The predictions table as arrays; every array has one entry per test image."""

    labels: np.ndarray  # (N,) int64 true digits
    predicted: np.ndarray  # (N,) int64 predicted digits
    probabilities: np.ndarray  # (N, 10) float64, rows sum to 1


def scored_from_table(table: pd.DataFrame) -> Scored:
    probabilities = table[PROBABILITY_COLUMNS].to_numpy(dtype=np.float64)
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
    """Accuracy, log loss, image count, and precision/recall/F1 (macro and per digit).

    A digit that is never predicted has an undefined precision; it counts as 0 (sklearn's
    `zero_division=0`) rather than raising a warning or writing NaN into the JSON.
    """
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    scored = scored_from_table(table)
    labels, predicted = scored.labels, scored.predicted
    per_digit = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, average=None, zero_division=0
    )
    macro = precision_recall_fscore_support(
        labels, predicted, labels=DIGITS, average="macro", zero_division=0
    )
    names = ("precision", "recall", "f1")
    return {
        "accuracy": _rounded(accuracy_score(labels, predicted)),
        "log_loss": _rounded(log_loss(labels, scored.probabilities, labels=DIGITS)),
        "test_images": len(labels),
        "macro": {name: _rounded(value) for name, value in zip(names, macro[:3], strict=True)},
        "per_digit": {
            str(digit): {name: _rounded(per_digit[i][digit]) for i, name in enumerate(names)}
            for digit in DIGITS
        },
    }


def confusion_table(scored: Scored) -> pd.DataFrame:
    """One row per test image, as DVC's `confusion` template wants: actual, predicted."""
    return pd.DataFrame({"actual": scored.labels, "predicted": scored.predicted})


def digit_accuracy_table(scored: Scored) -> pd.DataFrame:
    """Per digit: the share of its test images classified correctly (its recall), and count."""
    images = np.bincount(scored.labels, minlength=N_CLASSES)  # (10,)
    correct = np.bincount(
        scored.labels[scored.labels == scored.predicted], minlength=N_CLASSES
    )  # (10,)
    # A digit absent from the test set has no accuracy; NaN would break the plot, so 0.
    accuracy = np.divide(correct, images, out=np.zeros(N_CLASSES), where=images > 0)
    return pd.DataFrame(
        {"digit": DIGITS, "accuracy": np.round(accuracy, _DECIMALS), "images": images}
    )


def check_matches(predictions_path: Path, scored: Scored, test_path: Path, test: Digits) -> None:
    """The gallery shows test images next to their predictions: both files must agree."""
    if len(test.images) != len(scored.labels):
        raise PipelineError(
            f"{predictions_path}: has {len(scored.labels)} rows but {test_path} holds "
            f"{len(test.images)} images; expected one prediction per test image, in order"
        )
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
