"""The schema of a decoded checkpoint, checked before `restore` touches it.

A checkpoint is untrusted bytes: one written by other code, by an older version or by
hand must be ignored with a reason, never fail half-way through a restore.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from pydantic import ValidationError

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.training.stats import EpochStats

FORMAT_VERSION = 1


def validate_checkpoint(obj: Any) -> str | None:
    """What is wrong with a decoded checkpoint's schema, or None if `restore` can use it.

    Checks every key `restore` and the loop read, their types, and the model weights'
    names and shapes against the network its fingerprint describes (built on the meta
    device), so a checkpoint written by other code is ignored instead of failing half-way.
    """
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        return f"not a checkpoint of format version {FORMAT_VERSION}"
    kinds: dict[str, type | tuple[type, ...]] = {
        "made_with": dict, "epoch": int, "model": dict, "optimizer": dict,
        "schedule": (dict, type(None)), "rng": dict, "history": list,
        "best_model": (dict, type(None)),
    }  # fmt: skip
    for key, kind in kinds.items():
        if not isinstance(obj.get(key), kind):
            return f"'{key}' is missing or of the wrong type"
    if not 1 <= obj["epoch"] == len(obj["history"]):
        return f"epoch {obj['epoch']} with {len(obj['history'])} epochs of history"
    fields = {field.name for field in dataclasses.fields(EpochStats)}
    if not all(
        isinstance(stats, dict) and stats.keys() == fields and _plain(stats)
        for stats in obj["history"]
    ):
        return "'history' is not a list of epoch statistics"
    rng = obj["rng"]
    states = [rng.get(name) for name in rng if name not in ("torch", "cuda")]
    lists = [rng.get("torch"), rng.get("cuda")]
    if not all(isinstance(part, list) for part in lists):
        return "'rng' lacks the per-rank 'torch' and 'cuda' states"
    if not all(_byte_tensor(state) for state in [*states, *lists[0], *lists[1]]):
        return "'rng' holds something other than RNG states"
    try:
        expected, n_params = _expected_weights(obj["made_with"].get("model"))
    except (ValidationError, PipelineError, TypeError, ValueError):
        return "its model params are not valid ones"
    problem = _weights_problem(obj["model"], expected)
    if problem is None and obj["best_model"] is not None:
        problem = _weights_problem(obj["best_model"], expected)
    return problem or _optimizer_problem(obj["optimizer"], n_params)


def _plain(tree: dict) -> bool:
    return all(isinstance(value, int | float | str | type(None)) for value in tree.values())


def _byte_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1


def _expected_weights(model_params: Any) -> tuple[dict[str, torch.Tensor], int]:
    """The state dict (on the meta device: no memory) and parameter count of the network."""
    config = ModelParams.model_validate(model_params)
    with torch.device("meta"):
        network = build_model(config)
    return network.state_dict(), len(list(network.parameters()))


def _weights_problem(weights: dict, expected: dict[str, torch.Tensor]) -> str | None:
    """Names, shapes and dtypes of saved weights against the network's."""
    if weights.keys() != expected.keys():
        return "its weights are not those of its model params' network"
    for name, tensor in weights.items():
        want = expected[name]
        if not isinstance(tensor, torch.Tensor) or (tensor.shape, tensor.dtype) != (
            want.shape,
            want.dtype,
        ):
            return f"weight '{name}' does not fit its model params' network"
    return None


def _optimizer_problem(optimizer: dict, n_params: int) -> str | None:
    """The optimizer state's structure: one group list over the model's parameters."""
    groups, state = optimizer.get("param_groups"), optimizer.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        return "'optimizer' lacks 'param_groups' or 'state'"
    if not all(
        isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups
    ):
        return "'optimizer' has malformed parameter groups"
    indices = [index for group in groups for index in group["params"]]
    if sorted(indices) != list(range(n_params)) or not set(state) <= set(indices):
        return "'optimizer' state does not match the model's parameters"
    for entry in state.values():
        if not isinstance(entry, dict) or not all(
            isinstance(value, torch.Tensor | int | float) for value in entry.values()
        ):
            return "'optimizer' state holds something other than tensors and numbers"
    return None
