"""The model file: a safetensors file of the weights, plus the architecture config in its
metadata, so that `load_model` can rebuild the network without running any code from the
file (unlike a pickled `torch.save`).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.errors import PipelineError, shown
from mnist_pipeline.core.limits import MAX_MODEL_CONFIG_CHARS, MAX_MODEL_PARAMETERS
from mnist_pipeline.core.params import ModelParams, describe_error
from mnist_pipeline.core.tensor_files import TensorInfo, read_safetensors_header
from mnist_pipeline.model.networks import build_model

FORMAT_VERSION = 1  # of the config saved in the file
_CONFIG_KEY = "mnist_pipeline.model_config"
# torch dtype -> safetensors' name, for the dtypes a network's state dict holds.
_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
}


def saved_fields(config: ModelParams) -> dict[str, object]:
    """The config as the file stores it: the mlp without `channels` (they do not shape it),
    `members` only for an ensemble and `tta` only when on, so a plain network's file is
    byte for byte what it was before those knobs existed."""
    fields: dict[str, object] = {
        "arch": config.arch,
        "hidden": list(config.hidden),
        "dropout": config.dropout,
        "channels": list(config.channels) if config.arch == "cnn" else [],
        "format_version": FORMAT_VERSION,
    }
    if config.members != 1:
        fields["members"] = config.members
    if config.tta:
        fields["tta"] = config.tta
    return fields


def save_model(model: nn.Module, config: ModelParams, path: Path) -> None:
    """Write weights and config to a safetensors file, atomically."""
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # A single metadata entry: safetensors stores metadata as a hash map, and one key
    # keeps the header's byte order (and so the file hash) identical run to run.
    metadata = {_CONFIG_KEY: json.dumps(saved_fields(config), sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_model(path: Path) -> tuple[nn.Module, ModelParams]:
    """Rebuild a network from a model file, in eval mode. Never unpickles anything.

    Everything is checked before anything is built or allocated: the safetensors header
    (read by hand, bounded), the config in its metadata (the params schema and its upper
    bounds, then at most MAX_MODEL_PARAMETERS weights), and every tensor's name, dtype and
    shape against those of the network the config describes, built on the meta device
    (no memory), so any architecture is checked without code of its own.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _require_regular_file(path)
    try:
        header = read_safetensors_header(path, "a safetensors model file")
    except PipelineError as err:
        head = _first_bytes(path, 2)
        if head[:1] != b"\x80" and head != b"PK":  # neither a pickle nor torch.save's zip
            raise
        raise PipelineError(
            f"{err}; pickled checkpoints are refused because loading them can run code"
        ) from None
    config = _config_from_metadata(path, header.metadata)
    _check_tensors(path, config, header.tensors)
    try:
        with safe_open(str(path), framework="pt") as file:
            state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise PipelineError(f"{path}: not a safetensors model file ({err})") from None
    _check_finite(path, state)
    model = build_model(config)  # cannot fail: the same config built on the meta device
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, config


def _require_regular_file(path: Path) -> None:
    """One line for anything but a regular file, found by stat before any open: opening a
    FIFO waits for a writer, and a folder fails in the library with a traceback."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such model file; run `dvc repro train` first") from None
    except OSError as err:
        raise PipelineError(f"{path}: cannot read the model file ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path}: is a folder; expected a model file written by `train`")
    if not stat.S_ISREG(mode):
        raise PipelineError(
            f"{path}: is a {_KINDS.get(stat.S_IFMT(mode), 'special file')}, not a regular "
            "file; expected a model file written by `train`"
        )


_KINDS = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
          stat.S_IFSOCK: "socket"}  # fmt: skip


def _first_bytes(path: Path, count: int) -> bytes:
    """The file's first bytes; never waits (O_NONBLOCK, should it have become a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, count) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    finally:
        os.close(fd)


def _check_finite(path: Path, state: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights: such a model answers NaN for every digit."""
    for name, tensor in state.items():
        if tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise PipelineError(
                    f"{path}: tensor '{name[:80]}' holds {bad} non-finite values (NaN or "
                    "infinity); expected finite weights (retrain the model)"
                )


def _check_tensors(path: Path, config: ModelParams, found: dict[str, TensorInfo]) -> None:
    """Compare the header's tensors with the state dict of the network `config` describes."""
    with torch.device("meta"):  # shapes only: not one byte of weights is allocated
        try:
            expected = build_model(config).state_dict()
        except PipelineError as err:  # e.g. an architecture this version does not know
            raise PipelineError(f"{path}: {err}") from None
    n_weights = sum(tensor.numel() for tensor in expected.values())
    if n_weights > MAX_MODEL_PARAMETERS:
        raise PipelineError(
            f"{path}: its config describes {n_weights} weights; expected at most "
            f"{MAX_MODEL_PARAMETERS}"
        )
    for name in sorted(expected.keys() | found.keys()):
        want, have = expected.get(name), found.get(name)
        if want is None or have is None:
            problem = "is not in that network" if want is None else "is missing"
        elif have.shape != tuple(want.shape) or have.dtype != _DTYPES.get(want.dtype):
            problem = (
                f"is {have.dtype} {list(have.shape)}, expected "
                f"{_DTYPES.get(want.dtype)} {list(want.shape)}"
            )
        else:
            continue
        raise PipelineError(
            f"{path}: weights do not fit the '{config.arch}' network in its config: "
            f"tensor '{name[:80]}' {problem}"
        )


def _config_from_metadata(path: Path, metadata: dict[str, str]) -> ModelParams:
    """The config, checked against the params schema (with its upper bounds) first."""
    text = metadata.get(_CONFIG_KEY)
    no_config = PipelineError(
        f"{path}: no mnist-pipeline model config in the file's metadata; "
        "expected a model written by `mnist-pipeline train`"
    )
    if text is None or len(text) > MAX_MODEL_CONFIG_CHARS:
        raise no_config
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise no_config from None
    if not isinstance(fields, dict) or "format_version" not in fields:
        raise no_config
    if fields["format_version"] != FORMAT_VERSION:
        raise PipelineError(
            f"{path}: model format version {shown(fields['format_version'])}, "
            f"expected {FORMAT_VERSION}; retrain it with this version"
        )
    # The params schema checks types and bounds (hidden widths, layers, channels, dropout
    # in [0, 1), no Infinity) before anything is built.
    shared = {name: fields[name] for name in ModelParams.model_fields if name in fields}
    try:
        return ModelParams.model_validate(shared)
    except ValidationError as err:
        raise PipelineError(f"{path}: model config: {describe_error(err.errors()[0])}") from None
