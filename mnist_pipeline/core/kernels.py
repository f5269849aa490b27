"""Portable CPU kernels: the one place that pins them, called by the entry points.

Training gives the same bytes on any x86-64 machine (Intel or AMD, with or without
AVX-512), not just run to run on one, when torch's CPU libraries all run their AVX2 code
paths (docs/reproducibility.md has the measurements). The libraries read these variables
when they first run a kernel, so `pin_portable_kernels()` must run before torch is
imported: the stage entry points (`stages/*.py`), `python -m mnist_pipeline` and the
`mnist-pipeline` command call it first thing. Importing this module changes nothing.

Set MNIST_PIPELINE_NATIVE_KERNELS=1 to skip the pins and let each library pick the
fastest kernels of this CPU: results are then still repeatable on this machine, but the
model's bytes differ from the ones in dvc.lock on other CPUs. A variable already set in
the environment is left as it is.
"""

from __future__ import annotations

import os

# Each library's own switch, capped at AVX2: the widest instruction set that every x86-64
# CPU of the last decade has, and the same kernels (so the same float rounding) everywhere.
PORTABLE_KERNELS = {
    # ATen's vectorised kernels (elementwise ops, reductions, softmax, Adam): by default
    # AVX-512 where the CPU has it, AVX2 elsewhere, and the two round differently.
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL's matrix products (Linear layers; convolutions when oneDNN is off): Conditional
    # Numerical Reproducibility on the AVX2 code path. Without it MKL picks a code path by
    # CPU vendor and model. STRICT: also the same bits whatever MKL's thread split.
    "MKL_CBWR": "AVX2,STRICT",
    # oneDNN (convolutions, if enabled): no AVX-512 or AMX kernels.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
NATIVE_KERNELS_VARIABLE = "MNIST_PIPELINE_NATIVE_KERNELS"


class _PinState:
    """What this process's calls did: which variables they set, whether pins are in force."""

    set_here: list[str] = []  # noqa: RUF012 (one process-wide record, filled by the calls)
    in_force: bool = False


def pin_portable_kernels() -> bool:
    """Set the kernel pins unless opted out; True if they are in force.

    Call it before torch is imported. Idempotent.
    """
    if os.environ.get(NATIVE_KERNELS_VARIABLE, "") not in ("", "0"):
        _PinState.in_force = False
        return False
    for name, value in PORTABLE_KERNELS.items():
        if name not in os.environ:
            os.environ[name] = value
            _PinState.set_here.append(name)
    _PinState.in_force = True
    return True


def use_native_kernels() -> None:
    """Undo the pins this process set, for runs whose bytes depend on the CPU anyway (bf16).

    Takes effect only before torch runs its first kernel in this process.
    """
    for name in _PinState.set_here:
        os.environ.pop(name, None)
    _PinState.set_here.clear()
    _PinState.in_force = False


def set_by_pins(name: str) -> bool:
    """Whether `pin_portable_kernels` set this variable here (rather than the user's shell)."""
    return name in _PinState.set_here


def portable_kernels_in_force() -> bool:
    """True when `pin_portable_kernels` ran in this process and was not undone."""
    return _PinState.in_force
