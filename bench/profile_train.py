"""Where a training epoch of the `best` recipe spends its time, and what the speed-ups buy.

    python bench/profile_train.py [--epochs 2] [--profile]

Times epochs of the best recipe's cnn (augmentation on, batches of 128, 3,500 images)
with channels-last on or off, 1 or 2 threads, and torch.compile on or off; with
--profile it also prints torch.profiler's top operators for one epoch. The first epoch
of a compiled model includes the compilation. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import time

import torch
from compare_recipes import BEST, recipe_params  # run as a script: bench/ is on sys.path

from mnist_pipeline.data.split import load_bundled_digits
from mnist_pipeline.model.networks import build_model, standardize
from mnist_pipeline.training.augment import augment_images, draw_augmentation
from mnist_pipeline.training.optimization import classification_loss, make_optimizer
from mnist_pipeline.training.runtime import make_deterministic

N_IMAGES = 3500


def epoch_times(epochs: int, channels_last: bool, threads: int, compiled: bool) -> list[float]:
    # One member of the `best` ensemble, in fp32: what an epoch costs per network.
    one_member = {"model.members": 1, "model.tta": False, "train.precision": "fp32"}
    params = recipe_params(BEST | one_member)
    make_deterministic(0, threads)
    digits = load_bundled_digits()
    images = torch.from_numpy(digits.images[:N_IMAGES]).float() / 255  # (N, 1, 28, 28)
    labels = torch.from_numpy(digits.labels[:N_IMAGES])
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(params.model).to(memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), params.train)
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    batch_size = params.train.batch_size or N_IMAGES
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        draws = draw_augmentation(N_IMAGES, params.train.augment, generator)
        start = 0
        for batch in torch.randperm(N_IMAGES, generator=generator).split(batch_size):
            positions = slice(start, start + len(batch))
            start += len(batch)
            batch_images = augment_images(images[batch], params.train.augment, draws, positions)
            batch_images = standardize(batch_images).contiguous(memory_format=memory_format)
            optimizer.zero_grad()
            loss = classification_loss(
                forward(batch_images), labels[batch], params.train.label_smoothing
            )
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            epoch_times(1, channels_last=True, threads=1, compiled=False)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))

    print("| channels-last | threads | torch.compile | epoch 1 (s) | later epochs (s) |")
    print("|---|---:|---|---:|---:|")
    settings = [(False, 1, False), (True, 1, False), (False, 2, False), (True, 2, False)]
    if not args.no_compile:
        settings.append((True, 2, True))
    for channels_last, threads, compiled in settings:
        times = epoch_times(args.epochs, channels_last, threads, compiled)
        later = min(times[1:]) if len(times) > 1 else float("nan")
        print(
            f"| {'yes' if channels_last else 'no'} | {threads} | {'yes' if compiled else 'no'} "
            f"| {times[0]:.2f} | {later:.2f} |"
        )


if __name__ == "__main__":
    main()
