"""GPU check: train the pipeline's recipes on CUDA and print throughput and test accuracy.

    python bench/gpu_check.py                     # default and best recipes, fp32 and bf16
    python bench/gpu_check.py --epochs 3          # a quicker look
    python bench/gpu_check.py --device cpu --epochs 1 --train-size 500   # same code, on CPU

It calls the train stage's own function (stages.train.train_model) with `train.device`
set, on one split of the bundled digits (4,000 training / 1,000 test images by default),
so it measures what `dvc repro` would run on that machine. It also checks that the model
file written from a GPU run loads on the CPU and predicts the same digits. On a machine
without a GPU it says so and exits with status 0; CI never runs it. For several GPUs, use
`torchrun --nproc-per-node=gpu -m stages train` (README, "Data-parallel training").

Throughput is training images per second over the epochs after the first (the first one
includes CUDA start-up and kernel selection). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from compare_recipes import BEST, recipe_params  # run as a script: bench/ is on sys.path

from stages.core.digits import Digits
from stages.core.params import DataParams, Params
from stages.model.model_file import load_model, save_model
from stages.predict import class_probabilities
from stages.split import load_bundled_digits, split_digits
from stages.training.loop import train_model

RECIPES = {"default": {}, "best": BEST}


def check_recipe(
    train: Digits, test: Digits, params: Params, device: str, precision: str
) -> dict[str, object]:
    """Train one recipe on `device`; its throughput, accuracy and a CPU reload check."""
    train_params = params.train.model_copy(update={"device": device, "precision": precision})
    started = time.perf_counter()
    model, config, history = train_model(train, params.model, train_params, params.runtime.threads)
    seconds = time.perf_counter() - started
    n_train = len(train.images) - train_params.val_size
    later = [stats.seconds for stats in history[1:]] or [history[0].seconds]
    predicted = class_probabilities(model, test.images).argmax(axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(model, config, path)
        reloaded, _ = load_model(path)  # on the CPU, as on a machine without a GPU
    same_on_cpu = bool(
        (class_probabilities(reloaded, test.images).argmax(axis=1) == predicted).all()
    )
    return {
        "accuracy": float((predicted == test.labels).mean()),
        "seconds": seconds,
        "images_per_second": n_train * len(later) / sum(later),
        "same_on_cpu": same_on_cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--epochs", type=int, default=None, help="override each recipe's")
    parser.add_argument("--train-size", type=int, default=BEST["data.train_size"])
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--recipes", default="default,best", help="comma-separated")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA "
            f"{torch.version.cuda or 'none: a CPU-only build'}); nothing to check here",
            file=sys.stderr,
        )
        return 0
    data = DataParams(train_size=args.train_size, test_size=args.test_size, seed=42)
    train, test = split_digits(load_bundled_digits(), data)
    # bf16 autocast exists on CUDA only; on the CPU the check runs the fp32 path.
    precisions = ["fp32", "bf16"] if args.device == "cuda" else ["fp32"]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; {len(train.images)} training images, "
          f"{len(test.images)} test images (data.seed 42)\n")  # fmt: skip
    print("| recipe | precision | epochs | test accuracy | train time (s) | images/s | "
          "loads on CPU |\n|---|---|---:|---:|---:|---:|---|")  # fmt: skip
    for recipe in args.recipes.split(","):
        overrides = dict(RECIPES[recipe])
        if args.epochs is not None:
            overrides["train.epochs"] = args.epochs
        overrides["data.train_size"] = args.train_size
        params = recipe_params(overrides)
        for precision in precisions:
            row = check_recipe(train, test, params, args.device, precision)
            print(
                f"| {recipe} | {precision} | {params.train.epochs} | {row['accuracy']:.4f} | "
                f"{row['seconds']:.1f} | {row['images_per_second']:,.0f} | "
                f"{'yes' if row['same_on_cpu'] else 'NO'} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
