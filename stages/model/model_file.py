"""The model file: a safetensors file of the weights, plus the architecture config in its
metadata, so that `load_model` can rebuild the network without running any code from the
file (unlike a pickled `torch.save`).
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from stages.core.artifacts import atomic_output
from stages.core.errors import PipelineError
from stages.model.networks import FORMAT_VERSION, ModelConfig, build_model

_CONFIG_KEY = "mnist_pipeline.model_config"


def save_model(model: nn.Module, config: ModelConfig, path: Path) -> None:
    """Write weights and config to a safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # A single metadata entry: safetensors stores metadata as a hash map, and one key
    # keeps the header's byte order (and so the file hash) identical run to run.
    metadata = {_CONFIG_KEY: json.dumps(config.saved_fields(), sort_keys=True)}
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
            members=int(fields.get("members", 1)),  # absent: a single network
            tta=fields.get("tta", False) is True,  # absent: no test-time shifts
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
