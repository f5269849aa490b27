"""The networks, how pixels are fed to them, and the model file format.

A model file is a safetensors file: the weights, plus the architecture config in its
metadata, so that `load_model` can rebuild the network without running any code from
the file (unlike a pickled `torch.save`).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch import nn

from stages.data_io import IMAGE_SIDE, N_CLASSES, PIXELS, atomic_output
from stages.errors import PipelineError
from stages.params import ModelParams

# Mean and std of MNIST training pixels scaled to [0, 1]; standardising with them is
# the usual first fix to the tutorial, which fed raw 0-255 values to the network.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_CONFIG_KEY = "mnist_pipeline.model_config"
FORMAT_VERSION = 1
MAX_CNN_BLOCKS = 4  # each block halves the side: 28 -> 14 -> 7 -> 3 -> 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; saved inside the model file."""

    arch: str
    hidden: tuple[int, ...]
    dropout: float
    channels: tuple[int, ...] = ()  # cnn only; () for the mlp
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_params(cls, params: ModelParams) -> ModelConfig:
        # The mlp ignores `channels`; storing () keeps its config free of unused knobs.
        channels = tuple(params.channels) if params.arch == "cnn" else ()
        return cls(
            arch=params.arch,
            hidden=tuple(params.hidden),
            dropout=params.dropout,
            channels=channels,
        )


class MLP(nn.Module):
    """The tutorial's network: Linear layers with ReLU and dropout, log-softmax output.

    With the default hidden=(392, 196, 98) it is exactly 784 -> 392 -> 196 -> 98 -> 10.
    """

    def __init__(self, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        widths = [PIXELS, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]  # (B, 1, 28, 28) -> (B, 784)
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], N_CLASSES))
        self.layers = nn.Sequential(*layers)

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
        widths = [channels[-1] * side * side, *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in itertools.pairwise(widths):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(widths[-1], N_CLASSES))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.classifier(self.features(x)), dim=1)  # (B, 10)


def build_model(config: ModelConfig) -> nn.Module:
    if config.arch == "mlp":
        return MLP(config.hidden, config.dropout)
    if config.arch == "cnn" and 1 <= len(config.channels) <= MAX_CNN_BLOCKS:
        return CNN(config.channels, config.hidden, config.dropout)
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


def save_model(model: nn.Module, config: ModelConfig, path: Path) -> None:
    """Write weights and config to a safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # A single metadata entry: safetensors stores metadata as a hash map, and one key
    # keeps the header's byte order (and so the file hash) identical run to run.
    metadata = {_CONFIG_KEY: json.dumps(asdict(config), sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_model(path: Path) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a network from a model file, in eval mode. Never unpickles anything."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such model file; run `dvc repro train` first")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise PipelineError(
            f"{path}: not a safetensors model file ({err}); pickled checkpoints are refused "
            "because loading them can run code"
        ) from None
    config = _config_from_metadata(path, metadata)
    try:
        model = build_model(config)
    except PipelineError as err:  # e.g. an architecture this version does not know
        raise PipelineError(f"{path}: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_line = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise PipelineError(
            f"{path}: weights do not fit the '{config.arch}' network in its config: {first_line}"
        ) from None
    model.eval()
    return model, config


def _config_from_metadata(path: Path, metadata: dict[str, str]) -> ModelConfig:
    try:
        fields = json.loads(metadata[_CONFIG_KEY])
        config = ModelConfig(
            arch=str(fields["arch"]),
            hidden=tuple(int(width) for width in fields["hidden"]),
            dropout=float(fields["dropout"]),
            # Absent from mlp files written before the cnn existed.
            channels=tuple(int(width) for width in fields.get("channels", ())),
            format_version=int(fields["format_version"]),
        )
    except (KeyError, TypeError, ValueError):
        raise PipelineError(
            f"{path}: no mnist-pipeline model config in the file's metadata; "
            "expected a model written by `mnist-pipeline train`"
        ) from None
    if config.format_version != FORMAT_VERSION:
        raise PipelineError(
            f"{path}: model format version {config.format_version}, "
            f"expected {FORMAT_VERSION}; retrain it with this version"
        )
    return config
