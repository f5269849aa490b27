"""Whether this CPU computes in bf16 natively, which makes bf16 autocast pay off there.

Without native support (AVX512-BF16 or AMX-BF16) oneDNN emulates bf16, which is slower
than fp32: the pipeline then refuses `train.precision: bf16` on the CPU. With it, a cnn
epoch under bf16 autocast is ~1.6-1.9x faster (docs/recipes.md); the weights, optimizer
state and model file stay fp32, but their bytes then depend on the CPU's bf16 kernels.

"Native" also means oneDNN may use those instructions: a user who caps it below them
(`ONEDNN_MAX_CPU_ISA=AVX2`, as bench/reference_cpu.sh does to play an AVX2-only machine)
gets emulated bf16, so the answer is then no. The project's own AVX2 pin doesn't count:
a bf16 run removes it before torch loads (`use_native_kernels`, cli/pipeline.py train).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from mnist_pipeline.core.kernels import set_by_pins

# /proc/cpuinfo flags of the x86 instruction sets with bf16 dot products.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ONEDNN_CAP_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# oneDNN's ISA names and their feature bits (dnnl_cpu_isa_t); a cap allows bf16 dot
# products when its bits include AVX512_CORE_BF16's. ALL, DEFAULT (and a name oneDNN
# doesn't know, which it ignores) cap nothing.
_ONEDNN_ISA_BITS = {
    "SSE41": 0x1,
    "AVX": 0x3,
    "AVX2": 0x7,
    "AVX2_VNNI": 0xF,
    "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27,
    "AVX512_CORE_VNNI": 0x67,
    "AVX512_CORE_BF16": 0xE7,
    "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512": 0x1EF,
    "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX": 0xFEF,
    "AVX512_CORE_AMX_FP16": 0x1FEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF,
}
_BF16_BITS = _ONEDNN_ISA_BITS["AVX512_CORE_BF16"]


def native_bf16() -> bool:
    """True if this CPU lists AVX512-BF16 or AMX-BF16 (Linux) and the user's environment
    doesn't cap oneDNN below them; False if unknown."""
    return cpu_lists_native_bf16() and not onednn_capped_below_bf16()


def onednn_capped_below_bf16() -> bool:
    """Whether the user (not this process's kernel pins) capped oneDNN below bf16.

    Read at each call, since `use_native_kernels` may have removed the pin meanwhile.
    """
    if set_by_pins(ONEDNN_CAP_VARIABLE):
        return False
    return isa_cap_excludes_bf16(os.environ.get(ONEDNN_CAP_VARIABLE, ""))


def bf16_cap_note() -> str:
    """' (ONEDNN_MAX_CPU_ISA=AVX2 in the environment)' when that is why bf16 is off, else ''."""
    if not onednn_capped_below_bf16():
        return ""
    return f" ({ONEDNN_CAP_VARIABLE}={os.environ[ONEDNN_CAP_VARIABLE]} in the environment)"


def isa_cap_excludes_bf16(cap: str) -> bool:
    """Whether an ONEDNN_MAX_CPU_ISA value keeps oneDNN off its bf16 kernels."""
    bits = _ONEDNN_ISA_BITS.get(cap.strip().upper())
    return bits is not None and bits & _BF16_BITS != _BF16_BITS


@cache
def cpu_lists_native_bf16() -> bool:
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
