"""Stage `predict`: classify digits with a trained model and write the tutorial's table.

The table has the tutorial's `Predicted Value` and `True Value` columns (the latter only
when the input is labelled), the winning class's probability as `Confidence`, and the
ten class probabilities `prob_0`...`prob_9`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from mnist_pipeline.core.predictions import (
    CONFIDENCE_COLUMN,
    FILE_COLUMN,
    PREDICTED_COLUMN,
    PROBABILITY_COLUMNS,
    TRUE_COLUMN,
    write_predictions,
)
from mnist_pipeline.formats import read_digits
from mnist_pipeline.model.inference import (
    as_network_input,
    batch_size,
    prepare_for_inference,
)
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.model.networks import scale_pixels


def class_probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """uint8 (N, 1, 28, 28) -> (N, 10) float32 probabilities, with dropout off.

    Scores with a copy of the model made ready for inference (batch norm folded,
    channels-last: model/inference.py), in batches sized by a memory budget that counts
    an ensemble's members and test-time shifts. A model that `prepare_for_inference`
    already returned is used as is, so a server prepares once, not per request.
    """
    network = prepare_for_inference(model)  # in eval mode: dropout off, unlike the tutorial
    chunks = []
    with torch.inference_mode():
        for batch in torch.from_numpy(images).split(batch_size(network, len(images))):
            # softmax of log-probabilities is their exp, computed by ATen's own kernel,
            # which the AVX2 pin fixes; torch.exp goes through MKL's vector math, whose
            # last bit differs between Intel and AMD CPUs (docs/reproducibility.md).
            pixels = as_network_input(network, scale_pixels(batch))
            chunks.append(torch.softmax(network(pixels), dim=1))
    return torch.cat(chunks).numpy()


def predictions_table(
    probabilities: np.ndarray, labels: np.ndarray | None, sources: list[str] | None = None
) -> pd.DataFrame:
    """One row per image: prediction, true label if known, confidence, class probabilities.

    For digits read from image files, a first column `File` names the file of each row.
    """
    table = pd.DataFrame({PREDICTED_COLUMN: probabilities.argmax(axis=1).astype(np.int64)})
    if sources is not None:
        table.insert(0, FILE_COLUMN, sources)
    if labels is not None:
        table[TRUE_COLUMN] = labels
    table[CONFIDENCE_COLUMN] = probabilities.max(axis=1)
    table[PROBABILITY_COLUMNS] = probabilities
    return table


def run(
    model_path: Path,
    input_path: Path,
    output_path: Path,
    threads: int,
    labels_path: Path | None = None,
) -> pd.DataFrame:
    torch.set_num_threads(threads)
    model, _ = load_model(model_path)
    digits = read_digits(input_path, labels_path)  # any format; labels optional
    probabilities = class_probabilities(model, digits.images)
    table = predictions_table(probabilities, digits.labels, digits.sources)
    write_predictions(output_path, table)
    return table
