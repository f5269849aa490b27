#!/usr/bin/env bash
# Run a command as on the reference CPU: an AVX2-only x86-64 machine computing in fp32.
#
#     bench/reference_cpu.sh python bench/predict_throughput.py
#     bench/reference_cpu.sh dvc exp run -n fast -S ...
#
# ATen, oneDNN and MKL are capped at AVX2 (no AVX-512, no AMX), so bf16 has no native
# kernels: `train.precision: bf16` then trains in fp32 (device auto) or is refused
# (device cpu), as on such a machine (mnist_pipeline/training/cpu_bf16.py). Set
# THREADS=N to also cap OpenMP at N threads (the reference machine has 2 cores); pinning
# to cores is left to `taskset`. Prints the caps and the machine on stderr, then runs
# the command with them.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "error: bench/reference_cpu.sh: no command given; expected e.g. bench/reference_cpu.sh python bench/predict_throughput.py" >&2
    exit 2
fi
export ATEN_CPU_CAPABILITY=avx2
export ONEDNN_MAX_CPU_ISA=AVX2
export MKL_ENABLE_INSTRUCTIONS=AVX2
if [[ -n "${THREADS:-}" ]]; then
    export OMP_NUM_THREADS="$THREADS"
fi
{
    echo "reference CPU: ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA MKL_ENABLE_INSTRUCTIONS=$MKL_ENABLE_INSTRUCTIONS (fp32: no native bf16)${OMP_NUM_THREADS:+ OMP_NUM_THREADS=$OMP_NUM_THREADS}"
    echo "machine: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null), $(date -u +%Y-%m-%dT%H:%MZ)"
} >&2
exec "$@"
