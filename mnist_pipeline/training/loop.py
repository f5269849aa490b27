"""The training loop: PyTorch's canonical one, seeded, on one device or data-parallel.

A validation split can be held out of the training data (`train.val_size`); it is scored
after every epoch and can choose the model kept (`train.keep: best`). The test split is
never seen here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.model.ensemble import ensemble_size, mean_of_probabilities, summed_member_losses
from mnist_pipeline.model.networks import build_model, standardize
from mnist_pipeline.training.augment import augment_images, draw_augmentation
from mnist_pipeline.training.batches import (
    TrainingData,
    global_batch_size,
    global_batches,
    training_data,
)
from mnist_pipeline.training.checkpoint import Checkpoint, capture, restore
from mnist_pipeline.training.distributed import Cluster, sum_across, wrap_model
from mnist_pipeline.training.optimization import classification_loss, make_optimizer, make_schedule
from mnist_pipeline.training.runtime import (
    autocast,
    make_deterministic,
    resolve_device,
    stream_generator,
    stream_seed,
    uses_bf16,
)
from mnist_pipeline.training.stats import EpochReport, EpochStats


class TrainResult(NamedTuple):
    model: nn.Module  # in eval mode, ready for prediction
    config: ModelParams  # the network's description, as the model file saves it
    history: list[EpochStats]


@dataclass(frozen=True)
class _Trainer:
    """What every epoch of one run uses; built once by train_model."""

    model: nn.Module  # DDP around the network with several processes, else the network
    optimizer: torch.optim.Optimizer
    schedule: LRScheduler | None
    data: TrainingData
    params: TrainParams
    batch_size: int  # images per global batch
    generators: dict[str, torch.Generator]  # "order" (batches), "augment": on the CPU
    cluster: Cluster
    memory_format: torch.memory_format  # channels_last for the cnn
    amp: Callable[[], AbstractContextManager]  # bf16 autocast, or a null context


def train_model(
    digits: Digits,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
    *,
    cluster: Cluster | None = None,
    bf16: bool | None = None,
    fused_adam: bool | None = None,
    resume: Checkpoint | None = None,
    save_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> TrainResult:
    """Train a network; return it (on the CPU, in eval mode), its config and per-epoch stats.

    The loop is PyTorch's canonical one: model.train(), zero_grad, forward, loss,
    backward, step. With batch_size null every step sees the whole set, as in the tutorial.
    `bf16` is `uses_bf16`'s answer (decided here when None). `fused_adam`: Adam's
    implementation (None: fused in one process, for-each under DDP; see below).
    `resume` continues from a checkpoint; `save_checkpoint` gets one after every epoch (on rank 0).
    Under torchrun, `cluster` says which shard of each batch this process trains on.
    """
    if digits.labels is None:
        raise ValueError("training needs labelled digits")
    cluster = cluster or Cluster(device=resolve_device(train_params.device))
    device, seed = cluster.device, train_params.seed
    if bf16 is None:
        bf16 = uses_bf16(train_params.precision, train_params.device, device, not cluster.is_main)
    order_generator = make_deterministic(seed, cluster.threads(threads), device)
    augment_generator = stream_generator(seed, "augment")
    model = build_model(model_params)  # initialised from the seeded global RNG, on the CPU
    if cluster.rank > 0:  # other dropout masks than rank 0's (whose stream is unchanged)
        torch.manual_seed(stream_seed(seed, f"dropout of rank {cluster.rank}"))
    # channels_last lets oneDNN pick faster conv kernels (measured: bench/profile_train.py).
    memory_format = torch.channels_last if model_params.arch == "cnn" else torch.contiguous_format
    # torch's stubs omit Module.to's memory_format, which it documents and accepts.
    model = model.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]
    data = training_data(digits, train_params, device, memory_format)
    n_train = len(data.train_labels)  # after the validation split
    batch_size = global_batch_size(train_params, n_train, cluster)
    trainer_model = wrap_model(model, cluster)  # DDP with several processes, else the model
    # One process: the fused Adam, whose square root is the same on every CPU (portable
    # bytes). Under DDP the for-each Adam: with the fused one, 2 processes ended 0.02 away
    # from 1 process's weights (8 epochs, tests/test_distributed.py) where the for-each one
    # stays within 1e-4. Adam turns rounding-level differences in near-zero gradients into
    # whole +-lr steps; why the fused kernel amplifies DDP's differently is not known.
    # The cost: data-parallel CPU runs' bytes depend on the CPU vendor.
    if fused_adam is None:
        fused_adam = not cluster.is_distributed
    optimizer = make_optimizer(trainer_model.parameters(), train_params, fused=fused_adam)
    steps = train_params.epochs * math.ceil(n_train / batch_size)
    schedule = make_schedule(optimizer, train_params, steps)
    generators = {"order": order_generator, "augment": augment_generator}
    trainer = _Trainer(
        model=trainer_model,
        optimizer=optimizer,
        schedule=schedule,
        data=data,
        params=train_params,
        batch_size=batch_size,
        generators=generators,
        cluster=cluster,
        memory_format=memory_format,
        amp=autocast(device, bf16),
    )

    history: list[EpochStats] = []
    best_state: dict[str, torch.Tensor] | None = None
    if resume is not None:
        best_state = restore(
            resume,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            generators=generators,
            cluster=cluster,
        )
        history = list(resume.history)
    for epoch in range(len(history) + 1, train_params.epochs + 1):
        started = time.perf_counter()
        loss_sum, correct, lr = _train_epoch(trainer, epoch=epoch)
        # Rank 0 alone validates (and so alone keeps the best epoch): the others only train.
        val_loss, val_accuracy = (
            score(model, data.val_images, data.val_labels) if cluster.is_main else (None, None)
        )
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
        is_best = cluster.is_main and epoch == best_epoch([*history, stats])
        if train_params.keep == "best" and is_best:
            best_state = {name: value.clone() for name, value in model.state_dict().items()}
        history.append(stats)
        if save_checkpoint is not None:
            state = capture(
                epoch=epoch,
                model=model,
                optimizer=optimizer,
                schedule=schedule,
                generators=generators,
                history=history,
                best_model=best_state,
                cluster=cluster,
            )
            if state is not None:  # rank 0's; the other ranks only joined the gathers
                save_checkpoint(state)
        if report:
            report(stats)
    if best_state is not None:
        model.load_state_dict(best_state)
    model = model.to("cpu").eval()  # the model file must load on a machine without a GPU
    return TrainResult(model, model_params, history)


def _train_epoch(trainer: _Trainer, *, epoch: int) -> tuple[float, int, float]:
    """One pass over the training set: (sum of losses, correct predictions, last lr).

    Every rank walks the same global batches and trains on its shard of each (all of it
    with one process); the sums are over all ranks.
    """
    params, cluster, device = trainer.params, trainer.cluster, trainer.cluster.device
    data, optimizer, schedule = trainer.data, trainer.optimizer, trainer.schedule
    n_train = len(data.train_labels)
    # The epoch's random numbers are drawn on the CPU (the same bytes on any device) and
    # reach the GPU in one copy each, before the steps: a CPU tensor copied inside the
    # loop would make every step wait for the GPU to catch up.
    batches = list(global_batches(n_train, trainer.batch_size, trainer.generators["order"]))
    order = _to_device(torch.cat(batches), device)  # (N,) image indices, batch after batch
    members = ensemble_size(trainer.model)  # an ensemble's members: their own draws
    if params.augment.enabled:
        # Drawn for every global batch in full, so each image gets the same transform
        # whatever the number of processes: (N, 4) in [0, 1), in the order's positions.
        draws = draw_augmentation(
            n_train,
            params.augment,
            trainer.generators["augment"],
            copies=members,
            move=partial(_to_device, device=device),
        )
    smoothed_loss = partial(classification_loss, label_smoothing=params.label_smoothing)
    trainer.model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    lr = params.lr
    start = 0
    first_bad = torch.zeros((), dtype=torch.int64, device=device)  # 1-based batch; 0 = none
    for number, batch in enumerate(batches, start=1):
        shard = cluster.shard(len(batch))
        positions = slice(start + shard.start, start + shard.stop)  # this rank's, in `order`
        start += len(batch)
        indices = order[positions]
        images = data.train_images[indices]  # (B, 1, 28, 28) in 0-1
        if params.augment.enabled:  # (B, 1, 28, 28), or (M, B, 1, 28, 28) for M members
            images = augment_images(images, params.augment, draws, positions)
        images = standardize(images)
        if images.dim() == 4:
            images = images.contiguous(memory_format=trainer.memory_format)
        labels = data.train_labels[indices]
        optimizer.zero_grad()
        with trainer.amp():
            log_probs = trainer.model(images)  # (B, 10), or (M, B, 10) from an ensemble
            loss = summed_member_losses(log_probs, labels, smoothed_loss)
        # Remember the first non-finite loss on the device (no sync per batch); the epoch's
        # summed loss below then stops every rank together.
        bad_now = (first_bad == 0) & ~torch.isfinite(loss.detach())
        first_bad = torch.where(bad_now, number, first_bad)
        # DDP averages the ranks' gradients; weighting each rank's mean loss by its share
        # of the batch times the world size makes that average the global batch's mean.
        n_shard = shard.stop - shard.start
        share = n_shard * cluster.world_size / len(batch)
        (loss * share if share != 1 else loss).backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        if schedule is not None:
            schedule.step()
        loss_sum += loss.detach().double() * n_shard / members  # per member
        correct += (mean_of_probabilities(log_probs).argmax(dim=1) == labels).sum()
    totals = sum_across(torch.stack([loss_sum, correct.double()]), cluster).tolist()
    if not math.isfinite(totals[0]):  # the same sum on every rank, so all ranks stop here
        where = f", first in batch {int(first_bad)}" if int(first_bad) else ""
        raise PipelineError(
            f"train: the training loss became {totals[0]} in epoch {epoch}{where}; stopped, "
            f"no model written; try a lower train.lr (now {params.lr})"
        )
    return totals[0], int(totals[1]), lr


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU from pinned memory, so the CPU need not wait."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


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
