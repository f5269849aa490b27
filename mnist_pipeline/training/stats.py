"""What a training epoch reports, to the progress display, the DVCLive log and checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


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
