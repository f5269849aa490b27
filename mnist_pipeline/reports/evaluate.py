"""Stage `evaluate`: score the predictions and write metrics, plot tables and pictures.

Outputs (all computed before any is written, so a failure leaves the old ones in place):
- metrics/metrics.json: the headline numbers: accuracy, log loss, macro F1, image count;
- plots/confusion.csv: one row per test image (`actual`, `predicted`), for DVC's
  `confusion` template;
- plots/digit_accuracy.csv: one row per digit (`digit`, `accuracy` (= recall),
  `precision`, `f1`, `images`): the per-digit scores, drawn by `dvc plots`, kept out of
  the metrics so that `dvc exp show` stays narrow;
- plots/pictures/*.png: the matplotlib pictures drawn by mnist_pipeline/reports/pictures.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from mnist_pipeline.core.artifacts import atomic_output, load_prepared
from mnist_pipeline.core.predictions import read_predictions
from mnist_pipeline.reports.scores import (
    Scored,
    check_matches,
    compute_metrics,
    confusion_table,
    digit_scores_table,
    metrics_json,
    scored_from_table,
)


class PlotPaths(NamedTuple):
    """Where the plot outputs go, and the test images that the mistakes gallery shows."""

    test_images: Path  # input: prepared test tensors, in the order of the predictions
    confusion_table: Path
    digit_accuracy_table: Path
    pictures: Path  # folder for the PNG files


def run(predictions_path: Path, metrics_path: Path, plots: PlotPaths | None = None) -> dict:
    """Write the metrics, and the plot tables and pictures if `plots` says where.

    Everything is computed before anything is written, so a failure changes no file.
    """
    table = read_predictions(predictions_path)
    metrics = compute_metrics(table)
    outputs: dict[Path, str | bytes] = {metrics_path: metrics_json(metrics)}
    if plots is not None:
        outputs |= _plot_outputs(predictions_path, scored_from_table(table), plots)
    for path, content in outputs.items():
        with atomic_output(path) as tmp:
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content)
    return metrics


def _plot_outputs(predictions_path: Path, scored: Scored, plots: PlotPaths) -> dict:
    from mnist_pipeline.reports import pictures  # matplotlib: only when drawing

    test = load_prepared(plots.test_images)
    check_matches(predictions_path, scored, plots.test_images, test)
    outputs: dict[Path, str | bytes] = {
        plots.confusion_table: confusion_table(scored).to_csv(index=False),
        plots.digit_accuracy_table: digit_scores_table(scored).to_csv(index=False),
    }
    for name, png in pictures.draw_all(scored, test.images).items():
        outputs[plots.pictures / name] = png
    return outputs
