"""One place that makes torch deterministic: seed, thread count, deterministic kernels."""

from __future__ import annotations

import random

import numpy as np
import torch


def make_deterministic(seed: int, threads: int) -> torch.Generator:
    """Seed every RNG, fix the CPU thread count, and return a generator for data order.

    The thread count is part of reproducibility: a different split of a matrix product
    across threads can change float rounding, and so the model's bytes.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # That switch also fills every new tensor with NaN to expose reads of uninitialised
    # memory: a debugging aid that cost ~20% of a cnn epoch here (torch.profiler,
    # aten::fill_). Our kernels write before they read, so results are unchanged.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return torch.Generator().manual_seed(seed)


def stream_seed(seed: int, stream: str) -> int:
    """An independent seed for one named random stream (augmentation, validation split...).

    Separate streams mean that switching augmentation on does not change the batch order
    or the validation split, and vice versa.
    """
    entropy = [seed, *stream.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def stream_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))
