"""The entry points pin torch's CPU kernels before torch loads (mnist_pipeline/core/kernels.py),
unless opted out; importing the library alone changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from mnist_pipeline.core.kernels import NATIVE_KERNELS_VARIABLE, PORTABLE_KERNELS
from mnist_pipeline.training.runtime import make_deterministic
from tests.conftest import REPO_ROOT

# What an entry point does first (stages/*.py, mnist_pipeline.cli.main), then torch.
_PINNED_PROBE = "from mnist_pipeline.core.kernels import pin_portable_kernels as pin; pin(); "
_PROBE = (
    "import json, os, torch; from mnist_pipeline.core.kernels import PORTABLE_KERNELS; "
    "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), "
    "'env': {k: os.environ.get(k) for k in PORTABLE_KERNELS}}))"
)
# Every module of the library, imported: none of them may write to the environment.
_IMPORT_ALL = (
    "import os, pkgutil, importlib, json, mnist_pipeline; before = dict(os.environ); "
    "[importlib.import_module(m.name) for m in pkgutil.walk_packages("
    "mnist_pipeline.__path__, 'mnist_pipeline.') if not m.name.endswith('__main__')]; "
    "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
)


def _probe(code: str = _PINNED_PROBE + _PROBE, **env: str) -> dict:
    clean = {k: v for k, v in __import__("os").environ.items() if k not in PORTABLE_KERNELS}
    clean.pop(NATIVE_KERNELS_VARIABLE, None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=clean | {"PYTHONPATH": str(REPO_ROOT)} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_the_entry_points_pin_the_kernels_before_torch_runs_one():
    probe = _probe()
    assert probe["env"] == PORTABLE_KERNELS
    assert probe["capability"] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_importing_the_library_changes_nothing_in_the_environment():
    assert _probe(_PROBE)["env"] == dict.fromkeys(PORTABLE_KERNELS)
    assert _probe(_IMPORT_ALL) == []


def test_every_entry_point_pins_the_kernels_first():
    for entry_point in sorted((REPO_ROOT / "stages").glob("[!_]*.py")):
        body = entry_point.read_text().split('if __name__ == "__main__":\n', 1)[1]
        assert body.lstrip().startswith("pin_portable_kernels()"), entry_point.name


def test_the_pins_can_be_switched_off_or_overridden():
    assert _probe(**{NATIVE_KERNELS_VARIABLE: "1"})["env"] == dict.fromkeys(PORTABLE_KERNELS)
    assert _probe(ATEN_CPU_CAPABILITY="default")["capability"] == "DEFAULT"


def test_make_deterministic_switches_torch_to_deterministic_kernels():
    make_deterministic(seed=1, threads=1)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.get_num_threads() == 1
