"""Stage `train`: fit the network on the prepared training tensors and save the model file.

A validation split can be held out of the training data (`train.val_size`); it is scored
after every epoch and can choose the model kept (`train.keep: best`). The test split is
never read here. Per-epoch curves go to a DVCLive folder, which also gets the timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from stages.augment import random_affine
from stages.data_io import Digits, load_prepared
from stages.errors import PipelineError
from stages.model import ModelConfig, build_model, save_model, standardize
from stages.optimization import classification_loss, make_optimizer, make_schedule
from stages.params import ModelParams, TrainParams
from stages.runtime import make_deterministic, stream_generator, stream_seed


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did. Train figures are over the epoch's (augmented) batches."""

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float | None  # None without a validation split
    val_accuracy: float | None
    lr: float  # learning rate of the epoch's last step
    seconds: float  # wall time of the epoch, validation included


# Called after each epoch, e.g. to draw progress or log curves.
EpochReport = Callable[[EpochStats], None]


class TrainResult(NamedTuple):
    model: nn.Module  # in eval mode, ready for prediction
    config: ModelConfig
    history: list[EpochStats]


def split_validation(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into (train, validation), both sorted.

    Each class gives val_size * (its share of the data) images, rounded so that the
    total is exactly val_size (largest remainders get the extra image).
    """
    n_images = len(labels)
    if val_size == 0:
        return np.arange(n_images), np.arange(0)
    if val_size >= n_images:
        raise PipelineError(
            f"params.yaml: train.val_size = {val_size}, but the training data has only "
            f"{n_images} images; expected fewer, so that some are left to train on"
        )
    rng = np.random.default_rng(stream_seed(seed, "validation"))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_size / n_images
    per_class = np.floor(exact).astype(np.int64)
    short = val_size - int(per_class.sum())
    per_class[np.argsort(-(exact - per_class), kind="stable")[:short]] += 1
    val_indices = np.concatenate(
        [
            rng.permutation(np.flatnonzero(labels == digit))[:count]
            for digit, count in zip(classes, per_class, strict=True)
        ]
    )
    val_indices.sort()
    return np.setdiff1d(np.arange(n_images), val_indices), val_indices


def train_model(
    digits: Digits,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
) -> TrainResult:
    """Train a fresh network; return it (in eval mode), its config and per-epoch stats.

    The loop is PyTorch's canonical one: model.train(), zero_grad, forward, loss,
    backward, step. With batch_size null every step sees the whole set, as in the tutorial.
    """
    if digits.labels is None:
        raise ValueError("training needs labelled digits")
    order_generator = make_deterministic(train_params.seed, threads)
    augment_generator = stream_generator(train_params.seed, "augment")
    config = ModelConfig.from_params(model_params)
    model = build_model(config)  # initialised from the seeded global RNG
    # channels_last lets oneDNN pick faster conv kernels (measured: bench/profile_train.py).
    memory_format = torch.channels_last if config.arch == "cnn" else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    train_indices, val_indices = split_validation(
        digits.labels, train_params.val_size, train_params.seed
    )
    unit_images = torch.from_numpy(digits.images).to(torch.float32) / 255.0  # (N, 1, 28, 28)
    labels = torch.from_numpy(digits.labels)  # (N,) int64
    train_images, train_labels = unit_images[train_indices], labels[train_indices]
    val_images = standardize(unit_images[val_indices]).contiguous(memory_format=memory_format)
    val_labels = labels[val_indices]

    n_train = len(train_labels)  # after the validation split
    if train_params.batch_size is not None and train_params.batch_size > n_train:
        raise PipelineError(
            f"params.yaml: train.batch_size is {train_params.batch_size}, more than the "
            f"{n_train} training images; expected at most {n_train}, or null for full batch"
        )
    batch_size = train_params.batch_size or n_train
    steps_per_epoch = math.ceil(n_train / batch_size)
    optimizer = make_optimizer(model.parameters(), train_params)
    schedule = make_schedule(optimizer, train_params, train_params.epochs * steps_per_epoch)

    history: list[EpochStats] = []
    best_state: dict[str, torch.Tensor] | None = None
    for epoch in range(1, train_params.epochs + 1):
        started = time.perf_counter()
        model.train()
        loss_sum, correct, lr = 0.0, 0, train_params.lr
        for batch in _batches(n_train, batch_size, order_generator):
            images = train_images[batch]  # (B, 1, 28, 28) in 0-1
            if train_params.augment.enabled:
                images = random_affine(images, train_params.augment, augment_generator)
            images = standardize(images).contiguous(memory_format=memory_format)
            optimizer.zero_grad()
            log_probs = model(images)  # (B, 10)
            loss = classification_loss(log_probs, train_labels[batch], train_params.label_smoothing)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if schedule is not None:
                schedule.step()
            loss_sum += loss.item() * len(batch)
            correct += int((log_probs.argmax(dim=1) == train_labels[batch]).sum())
        val_loss, val_accuracy = score(model, val_images, val_labels)
        stats = EpochStats(
            epoch=epoch,
            epochs=train_params.epochs,
            train_loss=loss_sum / n_train,  # mean loss over the epoch's images
            train_accuracy=correct / n_train,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        if train_params.keep == "best" and epoch == best_epoch([*history, stats]):
            best_state = {name: value.clone() for name, value in model.state_dict().items()}
        history.append(stats)
        if report:
            report(stats)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, config, history)


def best_epoch(history: list[EpochStats]) -> int:
    """The first epoch with the highest validation accuracy (the last one without any)."""
    if not history or history[-1].val_accuracy is None:
        return len(history)
    best = max(history, key=lambda stats: (stats.val_accuracy, -stats.epoch))
    return best.epoch


def score(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> tuple[float | None, float | None]:
    """Mean NLL and accuracy of standardised images, with dropout off; None if no images."""
    if len(labels) == 0:
        return None, None
    model.eval()
    with torch.no_grad():
        log_probs = model(images)  # (N, 10)
        loss = torch.nn.functional.nll_loss(log_probs, labels).item()
        accuracy = (log_probs.argmax(dim=1) == labels).to(torch.float64).mean().item()
    return loss, accuracy


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
    live_dir: Path,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
) -> TrainResult:
    """Train, write the model file, and log curves and timings to the DVCLive folder."""
    from stages.training_log import TrainingLog

    digits = load_prepared(train_path)
    epochs = train_params.epochs
    with TrainingLog(live_dir, report) as log:
        started = time.perf_counter()
        result = train_model(digits, model_params, train_params, threads, log.epoch_done)
        train_seconds = time.perf_counter() - started
        kept_epoch = best_epoch(result.history) if train_params.keep == "best" else epochs
        images_seen = (len(digits.images) - train_params.val_size) * epochs
        log.finish(kept_epoch, train_seconds, images_seen)
    save_model(result.model, result.config, model_path)
    return result
