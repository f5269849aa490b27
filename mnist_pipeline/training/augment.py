"""Data augmentation: a random affine transform (rotation, shift, zoom) of each image,
optionally followed by an elastic distortion (Simard et al. 2003, `elastic_alpha` > 0).

It runs on a whole batch of tensors at once (one affine_grid + grid_sample call), drawn
from its own seeded generator, so it is fast and the same params give the same images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)

from mnist_pipeline.core.digits import IMAGE_SIDE
from mnist_pipeline.core.params import AugmentParams


def affine_transform(
    unit_images: torch.Tensor,
    params: AugmentParams,
    uniform: torch.Tensor,
    displacement: torch.Tensor | None = None,
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
    # cos and sin in float64, rounded to float32: torch's float32 cos/sin use MKL's vector
    # math, whose last bit differs between Intel and AMD CPUs (docs/reproducibility.md).
    cos = torch.cos(angle.double()).to(angle.dtype) / zoom
    sin = torch.sin(angle.double()).to(angle.dtype) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(unit_images.shape), align_corners=False)  # (B, 28, 28, 2)
    if displacement is not None:  # elastic: every output pixel samples a little elsewhere
        grid = grid + displacement
    return F.grid_sample(
        unit_images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


def draw_augmentation(
    n_images: int,
    params: AugmentParams,
    generator: torch.Generator,
    *,
    copies: int = 1,
    move: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch's random numbers, drawn on the CPU: per copy (an ensemble's members each
    get their own), (N, 4) uniforms for the affine transform and, with elastic distortion
    on, (N, 2, 28, 28) uniform noise; None without. `move` takes them to the device.

    The first copy's affine numbers are exactly what a single network draws, and the
    noise is drawn only with elastic_alpha > 0, so the defaults leave the stream as it was.
    """
    draws = []
    for _ in range(copies):
        uniform = torch.rand(n_images, 4, generator=generator)
        noise = None
        if params.elastic_alpha > 0:
            noise = move(torch.rand(n_images, 2, IMAGE_SIDE, IMAGE_SIDE, generator=generator))
        draws.append((move(uniform), noise))
    return draws


def augment_images(
    unit_images: torch.Tensor,
    params: AugmentParams,
    draws: list[tuple[torch.Tensor, torch.Tensor | None]],
    positions: slice,
) -> torch.Tensor:
    """(B, 1, 28, 28) -> the same, augmented with the draws at `positions`; with several
    copies (ensemble members), (copies, B, 1, 28, 28)."""
    copies = [
        affine_transform(
            unit_images,
            params,
            uniform[positions],
            None if noise is None else elastic_displacement(noise[positions], params),
        )
        for uniform, noise in draws
    ]
    return copies[0] if len(copies) == 1 else torch.stack(copies)


def elastic_displacement(noise: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """(B, 2, H, W) uniform noise in [0, 1) -> (B, H, W, 2) displacement in grid units.

    Simard et al. (2003): a random displacement in [-1, 1] per pixel and axis, smoothed
    by a Gaussian of std `elastic_sigma` pixels (normalised, zero-padded, separable), then
    scaled by `elastic_alpha` pixels. affine_grid's units are 2/side per pixel.

    The zero-padded separable blur is two products with one (side, side) banded matrix,
    rows then columns: the same sums as two depthwise convolutions with the (2r+1)-tap
    kernel, but one batched matrix product instead of convolutions with a 31-wide kernel
    (at sigma 5), which ran ~10x slower than the affine transform itself (bench notes in
    docs/recipes.md).
    """
    side = noise.shape[-1]
    blur = gaussian_blur_matrix(side, params.elastic_sigma, noise.dtype, noise.device)
    field = blur @ (2 * noise - 1) @ blur  # (B, 2, H, W): columns, then rows (blur is symmetric)
    return (field * (params.elastic_alpha * 2 / side)).permute(0, 2, 3, 1)


def gaussian_blur_matrix(
    side: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(side, side) matrix M with M[i, j] = g(i - j), g the normalised Gaussian kernel of std
    `sigma` cut at 3 sigma: x @ M blurs the rows of x as a zero-padded convolution would."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    # float64 then float32: torch's float32 exp uses MKL's vector math, whose last bit
    # differs between Intel and AMD CPUs (docs/reproducibility.md), like cos and sin above.
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (2r+1,)
    distance = torch.arange(side).view(-1, 1) - torch.arange(side).view(1, -1)  # i - j
    inside = distance.abs() <= radius
    matrix = torch.where(inside, kernel[(distance + radius).clamp(0, 2 * radius)], 0.0)
    return matrix.to(dtype=dtype, device=device)
