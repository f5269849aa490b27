"""The training recipe's parts chosen by params: optimizer, learning-rate schedule, loss."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, OneCycleLR

from mnist_pipeline.core.params import TrainParams


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter], params: TrainParams, *, fused: bool = True
) -> torch.optim.Optimizer:
    """adam (the tutorial's), adamw (decoupled weight decay) or sgd with nesterov momentum.

    fused (adam, adamw): one ATen kernel whose square root is the CPU's exact instruction.
    The for-each Adam calls torch.sqrt, which goes to MKL's vector math, and that rounds
    differently on AMD than on Intel CPUs: the same bytes on every x86-64 CPU need the
    fused kernel (docs/reproducibility.md). It is also the faster one.
    """
    if params.optimizer == "adam":
        return torch.optim.Adam(
            parameters, lr=params.lr, weight_decay=params.weight_decay, fused=fused
        )
    if params.optimizer == "adamw":
        return torch.optim.AdamW(
            parameters, lr=params.lr, weight_decay=params.weight_decay, fused=fused
        )
    return torch.optim.SGD(
        parameters,
        lr=params.lr,
        momentum=params.momentum,
        nesterov=params.momentum > 0,  # nesterov needs momentum
        weight_decay=params.weight_decay,
    )


def make_schedule(
    optimizer: torch.optim.Optimizer, params: TrainParams, total_steps: int
) -> LRScheduler | None:
    """A schedule stepped after every batch, over the whole run; None keeps lr constant."""
    if params.schedule == "onecycle":
        # Warms up to train.lr for the first 30% of steps, then anneals towards 0.
        return OneCycleLR(optimizer, max_lr=params.lr, total_steps=total_steps)
    if params.schedule == "cosine":
        return CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def classification_loss(
    log_probs: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Mean NLL of (B, 10) log-probabilities, optionally with label smoothing.

    Smoothing eps mixes the one-hot target with a uniform one: torch's cross_entropy with
    `label_smoothing`, which takes log_softmax of its input first, and log_softmax leaves
    log-probabilities as they are (up to rounding). Without smoothing, nll_loss directly:
    exactly the tutorial's NLLLoss, whose bits a second log_softmax would move.
    """
    if label_smoothing == 0:
        return F.nll_loss(log_probs, labels)
    return F.cross_entropy(log_probs, labels, label_smoothing=label_smoothing)
