"""The networks and how pixels are fed to them. The file format is in model_file.py.

A network is described by the `model` section of params.yaml, `ModelParams`: training
builds from it, and the model file saves it (model_file.saved_fields) and loads it back.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from mnist_pipeline.core.digits import IMAGE_SIDE, N_CLASSES, PIXELS
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import MAX_CNN_BLOCKS, MAX_MEMBERS, ModelParams
from mnist_pipeline.model.ensemble import Ensemble

# Mean and std of MNIST training pixels scaled to [0, 1]; standardising with them is
# the usual first fix to the tutorial, which fed raw 0-255 values to the network.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def classifier_head(n_features: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    """Flatten, then Linear -> ReLU -> Dropout for each hidden width, then Linear to 10 logits.

    Shared by both networks; the parameter names (`layers.1.weight`, ...) are the model
    file's tensor names, so this order is part of the file format.
    """
    widths = [n_features, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in, n_out in itertools.pairwise(widths):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(widths[-1], N_CLASSES))
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """The tutorial's network: Linear layers with ReLU and dropout, log-softmax output.

    With the default hidden=(392, 196, 98) it is exactly 784 -> 392 -> 196 -> 98 -> 10.
    """

    def __init__(self, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.layers = classifier_head(PIXELS, hidden, dropout)  # (B, 1, 28, 28) -> (B, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.layers(x), dim=1)  # (B, 10) log-probabilities


class CNN(nn.Module):
    """A compact conv net for 28x28 digits, log-softmax output like the MLP.

    Each entry of `channels` is one block: 3x3 conv (padding 1) -> 2x2 max-pool -> batch
    norm -> ReLU, so the side goes 28 -> 14 -> 7 -> 3 -> 1. Pooling before the norm and
    ReLU (rather than after) quarters their work: ~25% less CPU per epoch, measured with
    bench/profile_train.py, at no loss of validation accuracy. Then the flattened features go
    through Linear layers of widths `hidden`, each with ReLU and dropout, and a Linear to
    the 10 classes. channels=(32, 64, 128), hidden=(128,) has 241,770 parameters.
    """

    def __init__(self, channels: tuple[int, ...], hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        side = IMAGE_SIDE
        for n_in, n_out in itertools.pairwise([1, *channels]):
            # No conv bias: the batch norm right after it has its own shift.
            blocks += [
                nn.Conv2d(n_in, n_out, kernel_size=3, padding=1, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(n_out),
                nn.ReLU(),
            ]
            side //= 2
        self.features = nn.Sequential(*blocks)  # (B, 1, 28, 28) -> (B, C, side, side)
        self.classifier = classifier_head(channels[-1] * side * side, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.classifier(self.features(x)), dim=1)  # (B, 10)


def build_model(config: ModelParams) -> nn.Module:
    """The network a config describes: one, or an Ensemble of `members` of them.

    Members are built one after another from the global RNG, so each starts from its own
    seeded weights, and member 0 starts as the single network of the same seed would.
    """
    if not 1 <= config.members <= MAX_MEMBERS:
        raise PipelineError(f"an ensemble of {config.members} members; expected 1 to {MAX_MEMBERS}")
    if config.members == 1 and not config.tta:
        return _build_network(config)
    members = [_build_network(config) for _ in range(config.members)]
    return Ensemble(members, tta=config.tta, background=(0.0 - MNIST_MEAN) / MNIST_STD)


def _build_network(config: ModelParams) -> nn.Module:
    if config.arch == "mlp":
        return MLP(tuple(config.hidden), config.dropout)
    if config.arch == "cnn" and 1 <= len(config.channels) <= MAX_CNN_BLOCKS:
        return CNN(tuple(config.channels), tuple(config.hidden), config.dropout)
    raise PipelineError(
        f"unknown model architecture '{config.arch}' with channels {list(config.channels)}; "
        f"expected mlp, or cnn with 1 to {MAX_CNN_BLOCKS} conv blocks"
    )


def scale_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, 28, 28) in 0-255 -> standardised float32 (B, 1, 28, 28)."""
    return standardize(images.to(torch.float32) / 255.0)


def standardize(unit_images: torch.Tensor) -> torch.Tensor:
    """float (B, 1, 28, 28) in 0-1 (0 = background) -> standardised float32."""
    return (unit_images - MNIST_MEAN) / MNIST_STD
