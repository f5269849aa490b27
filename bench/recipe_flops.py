"""Training and inference FLOPs of every recipe of bench/recipe_cv.py, machine-independent.

    python bench/recipe_flops.py                       # every recipe, at 4,500 images
    python bench/recipe_flops.py --recipes fast,best --images 3600

Counted with torch.utils.flop_counter.FlopCounterMode (convolutions and matrix products,
forward and backward; batch norm, pooling, activations, the optimizer and augmentation
are not counted), as the training loop runs the model: in train mode, channels-last, an
ensemble's members each on their own copy of the batch. Convolutions and matrix products
are linear in the batch, so one epoch's FLOPs are one batch's per image times the
images (`--images`: 4,500 for the pipeline's `fast`/`best`, 3,600 in a 5-fold CV fold),
and the recipe's are that times `train.epochs`. Inference: one eval-mode forward per
image (members x test-time shifts of `model.tta` included, as `predict` runs it).

1 TFLOP = 1e12 floating-point operations (a multiply-add counts as 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` from root

from bench.compare_recipes import recipe_params
from bench.recipe_cv import RECIPES
from mnist_pipeline.model.ensemble import ensemble_size, summed_member_losses
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.training.optimization import classification_loss

PIPELINE_IMAGES = 4500  # data.train_size of the `fast` and `best` recipes
BATCH = 64  # images in the counted batch; FLOPs per image do not depend on it


def count_flops(overrides: dict) -> dict[str, float]:
    """FLOPs per image of one training step (forward + backward) and of one prediction,
    and the recipe's parameter count and epochs x members."""
    params = recipe_params(overrides)
    config = params.model
    torch.manual_seed(0)
    model = build_model(config)
    memory_format = torch.channels_last if config.arch == "cnn" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    members = ensemble_size(model)
    images = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=memory_format)
    labels = torch.arange(BATCH) % 10
    train_input = images if members == 1 else torch.stack([images] * members)
    model.train()
    with FlopCounterMode(display=False) as counter:
        log_probs = model(train_input)
        loss = summed_member_losses(
            log_probs,
            labels,
            lambda lp, y: classification_loss(lp, y, params.train.label_smoothing),
        )
        loss.backward()
    train_per_image = counter.get_total_flops() / BATCH
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return {
        "train_per_image": train_per_image,  # fwd + bwd, all members
        "inference_per_image": counter.get_total_flops() / BATCH,  # members x shifts
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": params.train.epochs,
        "members": members,
    }


def recipe_flops(overrides: dict, n_images: int = PIPELINE_IMAGES) -> dict[str, float]:
    """count_flops plus the whole recipe's training FLOPs on n_images images."""
    counted = count_flops(overrides)
    counted["train_total"] = counted["train_per_image"] * n_images * counted["epochs"]
    return counted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=None, help="comma-separated (default: all)")
    parser.add_argument("--images", type=int, default=PIPELINE_IMAGES, help="training images")
    args = parser.parse_args(argv)
    names = args.recipes.split(",") if args.recipes else list(RECIPES)
    unknown = [name for name in names if name not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {unknown}; expected some of {list(RECIPES)}")
    print(f"Training FLOPs on {args.images} images (forward + backward, augmentation excluded)\n")
    print(
        "| recipe | parameters (per member) | epochs x members | training MFLOP / image "
        "/ epoch | training GFLOP, whole recipe | inference MFLOP / image |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        flops = recipe_flops(RECIPES[name], args.images)
        print(
            f"| {name} | {flops['parameters'] // flops['members']:,} "
            f"| {flops['epochs']} x {flops['members']} "
            f"| {flops['train_per_image'] / 1e6:.1f} | {flops['train_total'] / 1e9:,.0f} "
            f"| {flops['inference_per_image'] / 1e6:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
