"""Importing `stages` pins torch's CPU kernels (stages/__init__.py), unless opted out."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from stages import NATIVE_KERNELS_VARIABLE, PORTABLE_KERNELS
from stages.training.runtime import make_deterministic
from tests.conftest import REPO_ROOT

_PROBE = (
    "import json, os, stages, torch; print(json.dumps({'capability': "
    "torch.backends.cpu.get_cpu_capability(), 'env': {k: os.environ.get(k) for k in "
    "stages.PORTABLE_KERNELS}}))"
)


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in __import__("os").environ.items() if k not in PORTABLE_KERNELS}
    clean.pop(NATIVE_KERNELS_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO_ROOT,
        env=clean | {"PYTHONPATH": str(REPO_ROOT)} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_importing_stages_pins_the_kernels_before_torch_runs_one():
    probe = _probe()
    assert probe["env"] == PORTABLE_KERNELS
    assert probe["capability"] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_the_pins_can_be_switched_off_or_overridden():
    assert _probe(**{NATIVE_KERNELS_VARIABLE: "1"})["env"] == dict.fromkeys(PORTABLE_KERNELS)
    assert _probe(ATEN_CPU_CAPABILITY="default")["capability"] == "DEFAULT"


def test_make_deterministic_switches_torch_to_deterministic_kernels():
    make_deterministic(seed=1, threads=1)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.get_num_threads() == 1
