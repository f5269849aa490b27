"""Evaluate's full report: metrics, the tables behind `dvc plots`, and the PNG pictures."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.predictions import (
    CONFIDENCE_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    TRUE_COLUMN,
    write_predictions,
)
from mnist_pipeline.reports import pictures
from mnist_pipeline.reports.evaluate import PlotPaths, run
from mnist_pipeline.reports.scores import (
    compute_metrics,
    confusion_table,
    digit_scores_table,
    precision_recall_f1,
    scored_from_table,
)
from tests.conftest import REPO_ROOT, synthetic_digits

PICTURE_NAMES = {"confusion.png", "mistakes.png", "confidence.png"}


def predictions_for(labels: np.ndarray, seed: int = 0, hit_rate: float = 0.7) -> pd.DataFrame:
    """A predictions table as `predict` writes it: random probabilities, mostly right.

    Built without torch (mnist_pipeline.model.predict imports it) so these tests stay fast.
    """
    rng = np.random.default_rng(seed)
    n_images = len(labels)
    logits = rng.normal(size=(n_images, 10))  # (N, 10)
    right = rng.random(n_images) < hit_rate
    logits[right, labels[right]] += 4  # make the true class win for about hit_rate of rows
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    table = pd.DataFrame({PREDICTED_COLUMN: probabilities.argmax(axis=1)})
    table[TRUE_COLUMN] = labels
    table[CONFIDENCE_COLUMN] = probabilities.max(axis=1)
    table[PROBABILITY_COLUMNS] = probabilities
    return table


def _inputs(folder: Path) -> tuple[Path, Path, PlotPaths]:
    """Test digits, their predictions on disk, and where evaluate should write."""
    digits = synthetic_digits(80)
    test_path = folder / "test.safetensors"
    save_prepared(test_path, digits)
    predictions = folder / "predictions.csv"
    write_predictions(predictions, predictions_for(digits.labels))
    plots = PlotPaths(test_path, folder / "confusion.csv", folder / "digits.csv", folder / "pics")
    return predictions, folder / "metrics.json", plots


@pytest.fixture
def evaluated(tmp_path):
    return _inputs(tmp_path)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """`mnist-pipeline evaluate` run once on the inputs: (its result, the inputs and outputs).

    Drawing the pictures is most of evaluate's time, so the tests of the written report
    share this one run; each checks its own property of it.
    """
    folder = tmp_path_factory.mktemp("reported")
    predictions, metrics_path, plots = _inputs(folder)
    (folder / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    args = ["evaluate", "--params", str(folder / "params.yaml")]
    args += ["--predictions", str(predictions), "--test-data", str(plots.test_images)]
    args += ["--metrics", str(metrics_path), "--confusion-table", str(plots.confusion_table)]
    args += ["--digit-accuracy-table", str(plots.digit_accuracy_table)]
    args += ["--pictures", str(plots.pictures)]
    result = CliRunner().invoke(app, args)
    return result, (predictions, metrics_path, plots)


def _outputs(metrics_path: Path, plots: PlotPaths) -> dict[str, bytes]:
    paths = [metrics_path, plots.confusion_table, plots.digit_accuracy_table]
    paths += [plots.pictures / name for name in sorted(PICTURE_NAMES)]
    return {path.name: path.read_bytes() for path in paths}


def test_metrics_hold_only_the_headline_numbers_rounded():
    """Per-digit scores would be 30 columns of `dvc exp show`: they are a plot table."""
    labels = np.arange(200) % 10
    metrics = compute_metrics(predictions_for(labels))
    assert list(metrics) == ["accuracy", "log_loss", "macro_f1", "test_images"]
    assert metrics["test_images"] == 200
    fractions = [metrics["accuracy"], metrics["macro_f1"]]
    assert all(0 <= value <= 1 for value in fractions)
    assert metrics["log_loss"] > 0
    assert all(value == round(value, 4) for value in [*fractions, metrics["log_loss"]])


def test_perfect_predictions_score_one_everywhere():
    labels = np.arange(30) % 10
    table = predictions_for(labels, hit_rate=1.0)
    metrics = compute_metrics(table)
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    per_digit = digit_scores_table(scored_from_table(table))
    assert (per_digit[["accuracy", "precision", "f1"]] == 1.0).all().all()


def test_a_digit_never_predicted_scores_zero_without_warning_or_nan():
    labels = np.arange(40) % 10
    table = predictions_for(labels, hit_rate=1.0)
    never_seven = table[PREDICTED_COLUMN] == 7
    table.loc[never_seven, PREDICTED_COLUMN] = 1  # now no image is predicted as a 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's UndefinedMetricWarning would fail here
        metrics = compute_metrics(table)
        per_digit = digit_scores_table(scored_from_table(table))
    seven = per_digit.set_index("digit").loc[7]
    assert (seven["accuracy"], seven["precision"], seven["f1"]) == (0.0, 0.0, 0.0)
    assert "NaN" not in json.dumps(metrics)
    assert not per_digit.isna().any().any()


def test_plot_tables_agree_with_the_metrics():
    labels = np.arange(100) % 10
    table = predictions_for(labels, seed=3)
    scored = scored_from_table(table)
    metrics = compute_metrics(table)
    confusion = confusion_table(scored)
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == 100
    assert (confusion["actual"] == confusion["predicted"]).mean() == metrics["accuracy"]
    per_digit = digit_scores_table(scored)
    assert list(per_digit.columns) == ["digit", "accuracy", "precision", "f1", "images"]
    assert list(per_digit["digit"]) == list(range(10))
    assert per_digit["images"].sum() == 100
    # The accuracy on one digit's images is that digit's recall; the images' mean of it
    # is the accuracy, and the macro F1 is the plain mean of the ten F1 scores.
    weighted = (per_digit["accuracy"] * per_digit["images"]).sum() / 100
    assert weighted == pytest.approx(metrics["accuracy"], abs=1e-3)
    assert per_digit["f1"].mean() == pytest.approx(metrics["macro_f1"], abs=1e-3)
    precision, recall, f1 = precision_recall_f1(scored.labels, scored.predicted)
    assert list(per_digit["accuracy"]) == pytest.approx(recall, abs=1e-4)
    assert list(per_digit["precision"]) == pytest.approx(precision, abs=1e-4)
    assert list(per_digit["f1"]) == pytest.approx(f1, abs=1e-4)


def test_worst_mistakes_are_wrong_and_most_confident_first():
    labels = np.arange(300) % 10
    scored = scored_from_table(predictions_for(labels, seed=1, hit_rate=0.5))
    shown = pictures.worst_mistakes(scored)
    confidence = scored.probabilities.max(axis=1)
    assert len(shown) == pictures.MISTAKES_SHOWN
    assert np.all(scored.predicted[shown] != scored.labels[shown])
    assert np.all(np.diff(confidence[shown]) <= 0)
    others = np.setdiff1d(np.flatnonzero(scored.predicted != scored.labels), shown)
    assert confidence[others].max() <= confidence[shown].min()


def test_run_writes_every_output_byte_identical_twice(reported, tmp_path):
    """A second run, later and into other files, writes the same bytes as the first."""
    _, (predictions, first_metrics, first_plots) = reported
    plots = PlotPaths(
        first_plots.test_images, tmp_path / "confusion.csv", tmp_path / "digits.csv",
        tmp_path / "pics",
    )  # fmt: skip
    run(predictions, tmp_path / "metrics.json", plots)
    assert _outputs(tmp_path / "metrics.json", plots) == _outputs(first_metrics, first_plots)
    assert {path.name for path in plots.pictures.iterdir()} == PICTURE_NAMES


def test_pictures_are_large_pngs_without_varying_metadata(reported):
    _, (_, _, plots) = reported
    for name in PICTURE_NAMES:
        data = (plots.pictures / name).read_bytes()
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG"
        assert min(image.size) >= 400, name
        assert b"matplotlib" not in data.lower()  # no `Software: matplotlib x.y` chunk


def test_a_gallery_without_mistakes_still_draws():
    labels = np.arange(20) % 10
    scored = scored_from_table(predictions_for(labels, hit_rate=1.0))
    digits = synthetic_digits(20)
    image = Image.open(
        io.BytesIO(pictures.png_bytes(pictures.mistakes_figure(scored, digits.images)))
    )
    assert min(image.size) >= 400


def test_predictions_of_other_test_images_are_refused_and_nothing_written(evaluated):
    predictions, metrics_path, plots = evaluated
    save_prepared(plots.test_images, synthetic_digits(79))
    with pytest.raises(PipelineError, match=r"has 80 rows but .*test.safetensors holds 79"):
        run(predictions, metrics_path, plots)
    assert not metrics_path.exists()
    digits = synthetic_digits(80)
    relabelled = Digits(digits.images, (digits.labels + 1) % 10)
    save_prepared(plots.test_images, relabelled)
    with pytest.raises(PipelineError, match=r"line 2, column 'True Value': got 0 but image 0"):
        run(predictions, metrics_path, plots)
    assert not metrics_path.exists()


def test_cli_evaluate_writes_the_report(reported):
    result, (_, metrics_path, plots) = reported
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(metrics_path.read_text())["test_images"] == 80
    assert {path.name for path in plots.pictures.iterdir()} == PICTURE_NAMES
