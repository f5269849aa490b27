"""A model made ready for scoring many images fast, and how many images to score at once.

`prepare_for_inference` returns a copy of a model for eval-mode scoring that computes the
same function with less work:

- Batch norm folded into the convolution before it. Our cnn block is conv -> max-pool
  -> batch norm -> ReLU, and batch norm in eval mode is y = s * x + t per channel. Since
  max(s * a, s * b) = s * max(a, b) when s >= 0, BN(pool(conv(x))) = pool(conv'(x)) with
  conv' = the conv with weights scaled by s and bias t; a block with any s < 0 keeps its
  batch norm. The fold moves one rounding (s * w is rounded once, rather than s * sum),
  so a cnn's probabilities can differ from the unfolded forward in the last bits
  (~5e-8). The fold is computed by the pinned ATen kernels: the same model file gives
  the same bytes run to run, and under the AVX2 pins should on any x86-64 CPU, as
  training does (not yet compared across CPU models; docs/performance.md).
- Channels-last (NHWC) tensors for the convolutions, which oneDNN runs without the
  layout reorders that NCHW costs it: with the fold, ~2.4x less CPU per image than the
  plain NCHW forward on AVX2 (docs/performance.md).
- ReLU in place, saving a tensor per block.

A network without convolutions (the tutorial's mlp) is only copied: its bytes are
unchanged. `images_per_batch` sizes a batch by a memory budget that counts every pass
of an ensemble with test-time shifts and the network's own activations.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from mnist_pipeline.core.digits import IMAGE_SIDE, N_CLASSES
from mnist_pipeline.model.ensemble import TTA_SHIFTS, Ensemble

# Bytes of intermediate tensors one batch may hold. 48 MiB keeps predict's peak memory
# far under 1 GB (torch itself dominates it) and gives the best cnn batches of ~200
# images, small enough to stay in cache between layers: 1.5x the images per CPU-second
# of batches of 800 (bench/predict_throughput.py's model, AVX2, one thread).
ACTIVATION_BUDGET = 48 * 2**20
# No batch larger than the fixed batch `predict` used before: the mlp's batches, so its
# matrix products, and so the default pipeline's predictions, stay byte for byte the same.
MAX_BATCH = 4096
_PLAN = "_inference_plan"  # the attribute prepare_for_inference leaves on its copy


@dataclass
class InferencePlan:
    """How a prepared model scores, worked out once so a server's requests don't redo it."""

    channels_last: bool
    images_per_batch: int | None = None  # worked out at the first batch of many images


def prepare_for_inference(model: nn.Module, *, in_place: bool = False) -> nn.Module:
    """An eval-mode model that scores faster: a copy, leaving `model` as it is, unless
    `in_place` (for a caller that owns the model and won't train it again, like serve).

    Idempotent: a model it returned is returned as is.
    """
    if isinstance(getattr(model, _PLAN, None), InferencePlan):
        return model
    prepared = (model if in_place else copy.deepcopy(model)).eval()
    for module in list(prepared.modules()):
        if isinstance(module, nn.Sequential):
            _fold_batch_norms(module)
    channels_last = any(isinstance(module, nn.Conv2d) for module in prepared.modules())
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    setattr(prepared, _PLAN, InferencePlan(channels_last))
    return prepared


def inference_plan(prepared: nn.Module) -> InferencePlan:
    """The plan of a model that prepare_for_inference returned."""
    plan = getattr(prepared, _PLAN, None)
    if not isinstance(plan, InferencePlan):
        raise TypeError("expected a model returned by prepare_for_inference")
    return plan


def batch_size(prepared: nn.Module, n_images: int) -> int:
    """Images per batch for scoring `n_images` with a prepared model.

    One image (a server's request) is one batch, without working out the plan's size,
    which runs the network once.
    """
    if n_images <= 1:
        return 1
    plan = inference_plan(prepared)
    if plan.images_per_batch is None:
        plan.images_per_batch = images_per_batch(prepared)
    return plan.images_per_batch


def as_network_input(prepared: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) float images in the memory format the prepared model runs fastest on."""
    if inference_plan(prepared).channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def _fold_batch_norms(layers: nn.Sequential) -> None:
    """In place: every Conv2d -> MaxPool2d -> BatchNorm2d whose BN scales are all >= 0
    becomes Conv2d (scaled, with bias) -> MaxPool2d; ReLUs become in place."""
    children = list(layers)
    for index, layer in enumerate(children):
        if isinstance(layer, nn.ReLU):
            layer.inplace = True  # its input is a fresh tensor nobody else reads
        window = children[index : index + 3]
        if len(window) < 3:
            continue
        conv, pool, norm = window
        if not (
            isinstance(conv, nn.Conv2d)
            and isinstance(pool, nn.MaxPool2d)
            and isinstance(norm, nn.BatchNorm2d)
            and norm.running_var is not None
            and norm.running_mean is not None
        ):
            continue
        with torch.no_grad():
            gamma = torch.ones_like(norm.running_var) if norm.weight is None else norm.weight
            # math.sqrt is IEEE's correctly rounded square root on every CPU; torch.sqrt of a
            # CPU tensor may run MKL's vector math, whose last bit differs by CPU vendor
            # (mnist_pipeline/core/portable_ops.py). One value per channel: cheap.
            variances = (norm.running_var.double() + norm.eps).tolist()
            std = torch.tensor([math.sqrt(v) for v in variances], dtype=torch.float64)
            scale = (gamma.double() / std).to(gamma.dtype)  # (C,)
            if bool((scale < 0).any()):
                continue  # max-pool doesn't commute with a negative scale: keep this BN
            shift = -norm.running_mean * scale
            if norm.bias is not None:
                shift = shift + norm.bias
            if conv.bias is not None:
                shift = shift + conv.bias * scale
            conv.weight.mul_(scale[:, None, None, None])  # (C_out, C_in, 3, 3)
            conv.bias = nn.Parameter(shift)
        layers[index + 2] = nn.Identity()


def images_per_batch(model: nn.Module, budget: int = ACTIVATION_BUDGET) -> int:
    """How many images to score at once so that one batch's tensors fit in `budget` bytes.

    Counts the test-time copies of each image, every output an ensemble stacks before
    averaging, and the activations of one network's forward (its passes run one after
    another, so one network's worth is alive at a time). At least 1, at most MAX_BATCH.
    """
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    shifts = len(TTA_SHIFTS) if isinstance(model, Ensemble) and model.tta else 1
    image_bytes = IMAGE_SIDE * IMAGE_SIDE * 4  # one float32 image
    padded_bytes = (IMAGE_SIDE + 2) ** 2 * 4  # the shifted copies are cut from this
    per_image = (
        image_bytes * (1 + shifts)
        + (padded_bytes if shifts > 1 else 0)
        + max(network_activation_bytes(member) for member in members)
        # every member's and shift's (B, 10) log-probabilities, stacked, then averaged
        + 2 * len(members) * shifts * N_CLASSES * 4
    )
    return max(1, min(MAX_BATCH, budget // per_image))


def network_activation_bytes(network: nn.Module) -> int:
    """Bytes of the intermediate tensors one image's forward makes, summed.

    Measured with one blank image through forward hooks on the leaf modules, so it
    follows whatever layers the network has; a view or an in-place result (Flatten,
    an in-place ReLU, eval-mode Dropout) shares its input's memory and is not counted
    again. An upper bound: most of them die before the last is made.
    """
    image = torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)
    # Kept alive until the end, so that no freed tensor's address is reused by a new one.
    outputs: dict[int, torch.Tensor] = {image.untyped_storage().data_ptr(): image}

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            outputs.setdefault(output.untyped_storage().data_ptr(), output)

    leaves = [module for module in network.modules() if not list(module.children())]
    hooks = [leaf.register_forward_hook(count) for leaf in leaves]
    was_training = network.training
    try:
        network.eval()
        with torch.inference_mode():
            network(image)
    finally:
        network.train(was_training)
        for hook in hooks:
            hook.remove()
    del outputs[image.untyped_storage().data_ptr()]  # the input is not an activation
    return sum(tensor.untyped_storage().nbytes() for tensor in outputs.values())
