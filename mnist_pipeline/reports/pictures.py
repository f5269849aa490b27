"""PNG pictures of what the model does, for people without a browser at hand.

Three pictures, each at least 400 px on both sides:
- confusion.png: the confusion matrix as a heatmap, with the count written in every cell;
- mistakes.png: the most confidently wrong test digits, with true label, prediction and
  confidence;
- confidence.png: histograms of the confidence of correct and of wrong predictions.

Figures are built with matplotlib's object API (`Figure`, no pyplot), so no GUI backend
is ever chosen and nothing is kept in global state. The PNG bytes are deterministic: the
only varying metadata matplotlib writes (its version, as `Software`) is dropped.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure

from mnist_pipeline.core.digits import N_CLASSES
from mnist_pipeline.reports.scores import Scored

DPI = 100
MISTAKES_SHOWN = 24  # 4 rows of 6: enough to see patterns, big enough to read
_GALLERY_COLUMNS = 6
_CORRECT_COLOUR, _WRONG_COLOUR = "#2a9d4a", "#d1495b"


def png_bytes(figure: Figure) -> bytes:
    """Render a figure to PNG with fixed metadata, so equal figures give equal bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def confusion_figure(labels: np.ndarray, predicted: np.ndarray) -> Figure:
    """Heatmap of counts: row = true digit, column = predicted digit."""
    counts = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)  # (true, predicted)
    np.add.at(counts, (labels, predicted), 1)
    figure = Figure(figsize=(7, 6.5), layout="constrained")
    axes = figure.add_subplot()
    heatmap = axes.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(heatmap, ax=axes, shrink=0.8, label="test images")
    # Dark cells get white text; the threshold is half the largest count.
    dark = counts > counts.max() / 2
    for true_digit in range(N_CLASSES):
        for predicted_digit in range(N_CLASSES):
            axes.text(
                predicted_digit,
                true_digit,
                str(counts[true_digit, predicted_digit]),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark[true_digit, predicted_digit] else "black",
            )
    axes.set_xticks(range(N_CLASSES))
    axes.set_yticks(range(N_CLASSES))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    accuracy = np.trace(counts) / max(len(labels), 1)
    axes.set_title(f"Confusion matrix: {len(labels)} test images, accuracy {accuracy:.4f}")
    return figure


def worst_mistakes(scored: Scored, limit: int = MISTAKES_SHOWN) -> np.ndarray:
    """Indices of wrong predictions, most confident first (ties: lower index first)."""
    confidence = scored.probabilities.max(axis=1)  # (N,)
    wrong = np.flatnonzero(scored.predicted != scored.labels)
    # lexsort sorts by its last key first: confidence descending, then index ascending.
    order = np.lexsort((wrong, -confidence[wrong]))
    return wrong[order][:limit]


def mistakes_figure(scored: Scored, images: np.ndarray) -> Figure:
    """Gallery of the most confidently misclassified test digits. images: (N, 1, 28, 28)."""
    shown = worst_mistakes(scored)
    rows = max(1, -(-MISTAKES_SHOWN // _GALLERY_COLUMNS))
    height = 2.1 * rows + 0.9
    # A fixed grid, not constrained layout: every cell is the same size anyway, and
    # laying out 24 titled axes took ~0.5 s of the evaluate stage's ~2 s.
    figure = Figure(figsize=(9, height))
    wrong_count = int((scored.predicted != scored.labels).sum())
    figure.suptitle(
        f"The {len(shown)} most confident of {wrong_count} misclassified test images",
        fontsize=13,
    )
    grid = figure.subplots(
        rows,
        _GALLERY_COLUMNS,
        squeeze=False,
        gridspec_kw={"left": 0.02, "right": 0.98, "bottom": 0.01, "top": 1 - 1.0 / height,
                     "wspace": 0.15, "hspace": 0.75},
    )  # fmt: skip
    for slot, axes in enumerate(grid.flat):
        axes.set_axis_off()
        if slot >= len(shown):
            continue
        index = shown[slot]
        axes.imshow(images[index, 0], cmap="gray_r", vmin=0, vmax=255)
        confidence = scored.probabilities[index].max()
        # "image 17" is the row of the predictions table and the index in the test file.
        axes.set_title(
            f"true {scored.labels[index]} \N{RIGHTWARDS ARROW} "
            f"predicted {scored.predicted[index]}\nconfidence {confidence:.1%}\nimage {index}",
            fontsize=9,
        )
    if not len(shown):
        figure.text(0.5, 0.5, "no misclassified test images", ha="center", fontsize=14)
    return figure


def confidence_figure(scored: Scored) -> Figure:
    """Histograms of the winning probability, correct predictions above, wrong below."""
    confidence = scored.probabilities.max(axis=1)  # (N,)
    correct = scored.predicted == scored.labels
    bins = np.linspace(0, 1, 21)  # 0.05 wide; confidence of 10 classes is always >= 0.1
    figure = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    for axes, chosen, colour, name in (
        (top, correct, _CORRECT_COLOUR, "correct"),
        (bottom, ~correct, _WRONG_COLOUR, "wrong"),
    ):
        axes.hist(confidence[chosen], bins=bins, color=colour, edgecolor="white")
        axes.set_ylabel("test images")
        mean = f", mean confidence {confidence[chosen].mean():.2f}" if chosen.any() else ""
        axes.set_title(f"{name} predictions: {int(chosen.sum())}{mean}", fontsize=11)
    bottom.set_xlabel("confidence (probability of the predicted digit)")
    bottom.set_xlim(0, 1)
    figure.suptitle("How confident is the model?", fontsize=13)
    return figure


def draw_all(scored: Scored, images: np.ndarray) -> dict[str, bytes]:
    """All pictures as {file name: PNG bytes}. images: (N, 1, 28, 28) uint8."""
    return {
        "confusion.png": png_bytes(confusion_figure(scored.labels, scored.predicted)),
        "mistakes.png": png_bytes(mistakes_figure(scored, images)),
        "confidence.png": png_bytes(confidence_figure(scored)),
    }
