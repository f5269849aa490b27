"""Stage `train`: fit the network on the prepared training tensors and save the model file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from stages.data_io import Digits, load_prepared
from stages.errors import PipelineError
from stages.model import ModelConfig, build_model, save_model, scale_pixels
from stages.params import ModelParams, TrainParams
from stages.runtime import make_deterministic

# Called after each epoch with (epoch, epochs, mean training loss).
EpochReport = Callable[[int, int, float], None]


def train_model(
    digits: Digits,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
) -> tuple[nn.Module, ModelConfig, list[float]]:
    """Train a fresh network; return it (in eval mode), its config and the loss per epoch.

    The loop is PyTorch's canonical one: model.train(), zero_grad, forward, NLL loss,
    backward, step. With batch_size null every step sees the whole set, as in the tutorial.
    """
    if digits.labels is None:
        raise ValueError("training needs labelled digits")
    order_generator = make_deterministic(train_params.seed, threads)
    config = ModelConfig.from_params(model_params)
    model = build_model(config)  # initialised from the seeded global RNG
    optimizer = torch.optim.Adam(model.parameters(), lr=train_params.lr)

    images = scale_pixels(torch.from_numpy(digits.images))  # (N, 1, 28, 28) float32
    labels = torch.from_numpy(digits.labels)  # (N,) int64
    n_images = len(labels)
    if train_params.batch_size is not None and train_params.batch_size > n_images:
        raise PipelineError(
            f"params.yaml: train.batch_size is {train_params.batch_size}, more than the "
            f"{n_images} training images; expected at most {n_images}, or null for full batch"
        )
    batch_size = train_params.batch_size or n_images

    losses: list[float] = []
    for epoch in range(1, train_params.epochs + 1):
        model.train()
        loss_sum = 0.0
        for batch in _batches(n_images, batch_size, order_generator):
            optimizer.zero_grad()
            loss = F.nll_loss(model(images[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels[batch])
        losses.append(loss_sum / n_images)  # mean loss over the epoch's images
        if report:
            report(epoch, train_params.epochs, losses[-1])
    model.eval()
    return model, config, losses


def _batches(n_images: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index tensors of a fresh random order each epoch; one batch of all images if full-batch."""
    if batch_size >= n_images:
        yield torch.arange(n_images)
        return
    order = torch.randperm(n_images, generator=generator)
    yield from order.split(batch_size)


def run(
    train_path: Path,
    model_path: Path,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
) -> list[float]:
    digits = load_prepared(train_path)
    model, config, losses = train_model(digits, model_params, train_params, threads, report)
    save_model(model, config, model_path)
    return losses
