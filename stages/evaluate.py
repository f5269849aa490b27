"""Stage `evaluate`: score the predictions table and write metrics/metrics.json.

Only values that depend on the predictions go in here (no timings), so the file is
byte-identical whenever the predictions are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stages.data_io import (
    N_CLASSES,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    TRUE_COLUMN,
    atomic_output,
    read_predictions,
)

# Rounded so that `dvc metrics diff` reads cleanly; 1e-4 is finer than one image in 1,000.
_DECIMALS = 4


def compute_metrics(table: pd.DataFrame) -> dict[str, float | int]:
    from sklearn.metrics import accuracy_score, log_loss

    true = table[TRUE_COLUMN].to_numpy()
    probabilities = table[PROBABILITY_COLUMNS].to_numpy(dtype=np.float64)
    # The table stores probabilities to 6 decimals; renormalise the rounding away.
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return {
        "accuracy": round(float(accuracy_score(true, table[PREDICTED_COLUMN])), _DECIMALS),
        "log_loss": round(float(log_loss(true, probabilities, labels=range(N_CLASSES))), _DECIMALS),
        "test_images": len(table),
    }


def write_metrics(path: Path, metrics: dict) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def run(predictions_path: Path, metrics_path: Path) -> dict[str, float | int]:
    metrics = compute_metrics(read_predictions(predictions_path))
    write_metrics(metrics_path, metrics)
    return metrics
