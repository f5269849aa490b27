"""Data augmentation: a random affine transform (rotation, shift, zoom) of each image.

It runs on a whole batch of tensors at once (one affine_grid + grid_sample call), drawn
from its own seeded generator, so it is fast and the same params give the same images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from stages.core.params import AugmentParams


def random_affine(
    unit_images: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> torch.Tensor:
    """(B, 1, 28, 28) float in 0-1 -> the same images, each rotated, shifted and zoomed.

    Works on unscaled pixels so that the zeros grid_sample pads with are background.
    Always draws 4 numbers per image, so the random stream does not depend on the values.
    """
    uniform = torch.rand(unit_images.shape[0], 4, generator=generator)  # (B, 4) in [0, 1)
    return affine_transform(unit_images, params, uniform.to(unit_images.device))


def affine_transform(
    unit_images: torch.Tensor, params: AugmentParams, uniform: torch.Tensor
) -> torch.Tensor:
    """Transform each image by its own 4 numbers in [0, 1): (B, 4) on the images' device.

    Split from the drawing so that data-parallel training can draw the numbers of a whole
    batch and transform only its shard: each image is then augmented as in one process.
    """
    angle = (2 * uniform[:, 0] - 1) * math.radians(params.rotation)
    low, high = params.scale
    zoom = low + (high - low) * uniform[:, 1]
    # affine_grid's coordinates run from -1 to 1, so a shift of f sides is 2f there.
    shift = (2 * uniform[:, 2:] - 1) * (2 * params.translation)  # (B, 2)
    # theta maps output coordinates to input ones: dividing by zoom enlarges the digit.
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(unit_images.shape), align_corners=False)  # (B, 28, 28, 2)
    return F.grid_sample(
        unit_images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def augment_batch(
    unit_images: torch.Tensor,
    params: AugmentParams,
    generator: torch.Generator,
    *,
    shard: slice,
    global_size: int,
    copies: int = 1,
) -> torch.Tensor:
    """Augment this process's shard of a global batch: (B, 1, 28, 28) -> the same shape,
    or (copies, B, 1, 28, 28) with an independent draw for each member of an ensemble.

    The numbers are drawn for the whole global batch (global_size images), so each image
    gets the same transform whatever the number of processes; the first copy's draw is
    the one a single network gets, so copies=1 leaves its random stream unchanged.
    """
    draws = []
    for _ in range(copies):
        uniform = torch.rand(global_size, 4, generator=generator)[shard]  # (B, 4)
        draws.append(affine_transform(unit_images, params, uniform.to(unit_images.device)))
    return draws[0] if copies == 1 else torch.stack(draws)
