"""One place that chooses the device and makes torch deterministic: seed, threads, kernels."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch

from mnist_pipeline.core.console import say
from mnist_pipeline.core.errors import ParamsError, PipelineError
from mnist_pipeline.core.kernels import PORTABLE_KERNELS, portable_kernels_in_force
from mnist_pipeline.training.cpu_bf16 import bf16_cap_note, native_bf16

# cuBLAS needs a fixed workspace to give the same sums every run; it reads this variable
# when it first starts, so it is set before anything runs on the GPU.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """`train.device` (auto | cpu | cuda) -> the device this process trains on.

    auto picks CUDA when torch sees a GPU, else the CPU. Under torchrun each process of a
    node takes the GPU numbered by its LOCAL_RANK.
    """
    cuda_available = torch.cuda.is_available()
    if requested == "cuda" and not cuda_available:
        raise ParamsError(
            "train.device is cuda, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}); expected auto or cpu here"
        )
    if requested == "cpu" or not cuda_available:
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if local_rank >= visible:  # else CUDA's own "invalid device ordinal", mid-way through
        raise PipelineError(
            f"torchrun: LOCAL_RANK is {local_rank}, but torch sees {visible} CUDA GPU(s) on "
            f"this machine; expected --nproc-per-node at most {visible} (or train.device cpu)"
        )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    return torch.device("cuda", local_rank)


def uses_bf16(
    precision: str, requested_device: str, device: torch.device, quiet: bool = False
) -> bool:
    """Whether to train under bf16 autocast, as `train.precision` says.

    On CUDA, and on a CPU with native bf16 (mnist_pipeline/training/cpu_bf16.py). On another CPU
    an explicit `device: cpu` with bf16 is refused; with `auto` on a machine without a
    GPU the same params still train, in fp32, and say so (unless quiet: under torchrun
    only rank 0 speaks).
    """
    if precision == "fp32":
        return False
    if device.type == "cuda" or native_bf16():
        return True
    if requested_device == "cpu":
        raise ParamsError(
            "train.precision is bf16, but train.device is cpu and this CPU has no native "
            f"bf16 (avx512_bf16 or amx_bf16) that oneDNN may use{bf16_cap_note()}; "
            "expected fp32 on this CPU"
        )
    if not quiet:
        say(
            "note: train.precision bf16 needs CUDA or a CPU with native bf16; neither here, "
            "so training in fp32"
        )
    return False


def autocast(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    """A factory of the context that the forward pass and loss run in."""
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def make_deterministic(
    seed: int, threads: int, device: torch.device | None = None
) -> torch.Generator:
    """Seed every RNG, fix the CPU thread count, and return a generator for data order.

    The thread count is part of reproducibility: a different split of a matrix product
    across threads can change float rounding, and so the model's bytes. Which kernels run
    is the other part: mnist_pipeline/core/kernels.py pins them before torch loads (checked here).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    torch.set_num_threads(threads)
    on_cuda = device is not None and device.type == "cuda"
    # On CUDA a few kernels (e.g. NLLLoss's) have no deterministic version: warn there
    # rather than stop the run. Every kernel this pipeline uses on the CPU is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=on_cuda)
    if on_cuda:
        torch.backends.cudnn.benchmark = False  # autotuning may pick other kernels each run
    # That switch also fills every new tensor with NaN to expose reads of uninitialised
    # memory: a debugging aid that cost ~20% of a cnn epoch here (torch.profiler,
    # aten::fill_). Our kernels write before they read, so results are unchanged.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    # The pinned AVX2 kernels, unless torch ran a kernel before the entry point pinned them
    # (mnist_pipeline/core/kernels.py; the variable is read at the first one), or the CPU
    # lacks AVX2: then say so.
    capability = torch.backends.cpu.get_cpu_capability()
    pinned = PORTABLE_KERNELS["ATEN_CPU_CAPABILITY"].upper()
    if portable_kernels_in_force() and capability != pinned:
        say(
            f"note: torch's CPU kernels are {capability}, not the pinned AVX2 ones: the "
            "model's bytes may differ from those of other machines (docs/reproducibility.md)"
        )
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
