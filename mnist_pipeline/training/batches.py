"""What each training step sees: the validation split, the tensors on the training
device, and the global batches, in a seeded random order, that every process walks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.errors import ParamsError
from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.model.networks import standardize
from mnist_pipeline.training.distributed import Cluster
from mnist_pipeline.training.runtime import stream_seed


def split_validation(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into (train, validation), both sorted.

    Each class gives val_size * (its share of the data) images, rounded so that the
    total is exactly val_size (largest remainders get the extra image).
    """
    n_images = len(labels)
    if val_size == 0:
        return np.arange(n_images), np.arange(0)
    if val_size >= n_images:
        raise ParamsError(
            f"train.val_size = {val_size}, but the training data has only "
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


class TrainingData(NamedTuple):
    """The tensors of one run, on the training device."""

    train_images: torch.Tensor  # (N, 1, 28, 28) float in 0-1
    train_labels: torch.Tensor  # (N,) int64
    val_images: torch.Tensor  # (V, 1, 28, 28) standardised
    val_labels: torch.Tensor  # (V,) int64


def training_data(
    digits: Digits, train_params: TrainParams, device: torch.device, memory_format
) -> TrainingData:
    if digits.labels is None:
        raise ValueError("training needs labelled digits")
    train_indices, val_indices = split_validation(
        digits.labels, train_params.val_size, train_params.seed
    )
    unit_images = torch.from_numpy(digits.images).to(torch.float32) / 255.0  # (N, 1, 28, 28)
    labels = torch.from_numpy(digits.labels)  # (N,) int64
    val_images = standardize(unit_images[val_indices]).contiguous(memory_format=memory_format)
    return TrainingData(
        unit_images[train_indices].to(device),
        labels[train_indices].to(device),
        val_images.to(device),
        labels[val_indices].to(device),
    )


def global_batch_size(train_params: TrainParams, n_train: int, cluster: Cluster) -> int:
    """Images per global batch; every process must get at least one image of each."""
    if train_params.batch_size is not None and train_params.batch_size > n_train:
        raise ParamsError(
            f"train.batch_size is {train_params.batch_size}, more than the "
            f"{n_train} training images; expected at most {n_train}, or null for full batch"
        )
    batch_size = train_params.batch_size or n_train
    smallest = n_train % batch_size or batch_size  # the epoch's last batch may be short
    if smallest < cluster.world_size:
        raise ParamsError(
            f"train.batch_size {batch_size} leaves a batch of {smallest} "
            f"image(s) for {cluster.world_size} processes; expected a batch size that gives "
            "every process at least one image of every batch"
        )
    return batch_size


def global_batches(
    n_images: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Index tensors of a fresh random order each epoch; one batch of all images if full-batch."""
    if batch_size >= n_images:
        yield torch.arange(n_images)
        return
    order = torch.randperm(n_images, generator=generator)
    yield from order.split(batch_size)
