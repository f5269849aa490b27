"""Whether this CPU computes in bf16 natively, which makes bf16 autocast pay off there.

Without native support (AVX512-BF16 or AMX-BF16) oneDNN emulates bf16, which is slower
than fp32: the pipeline then refuses `train.precision: bf16` on the CPU. With it, a cnn
epoch under bf16 autocast is ~1.6-1.9x faster (docs/recipes.md); the weights, optimizer
state and model file stay fp32, but their bytes then depend on the CPU's bf16 kernels.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

# /proc/cpuinfo flags of the x86 instruction sets with bf16 dot products.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def native_bf16() -> bool:
    """True if this CPU's flags list AVX512-BF16 or AMX-BF16 (Linux); False if unknown."""
    try:
        return lists_native_bf16(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:  # not Linux, or no /proc: say no rather than guess
        return False


def lists_native_bf16(cpuinfo: str) -> bool:
    """Whether the first `flags` line of a /proc/cpuinfo text names a bf16 instruction set."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_FLAGS & set(line.partition(":")[2].split()))
    return False
