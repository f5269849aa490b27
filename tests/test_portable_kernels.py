"""The entry points pin torch's CPU kernels before torch loads (mnist_pipeline/core/kernels.py),
unless opted out; importing the library alone changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
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
# The pins' variables as the process sees them, without importing torch (a second or
# more of CPU per probe): what a probe needs when it asserts nothing about kernels.
_ENV_PROBE = (
    "import json, os; from mnist_pipeline.core.kernels import PORTABLE_KERNELS; "
    "print(json.dumps({'env': {k: os.environ.get(k) for k in PORTABLE_KERNELS}}))"
)
# Every module of the library (torch included), imported: none of them may write to the
# environment, and the pins' variables stay unset.
_IMPORT_ALL = (
    "import os; before = dict(os.environ); import pkgutil, importlib, json, mnist_pipeline; "
    "[importlib.import_module(m.name) for m in pkgutil.walk_packages("
    "mnist_pipeline.__path__, 'mnist_pipeline.') if not m.name.endswith('__main__')]; "
    "import torch; from mnist_pipeline.core.kernels import PORTABLE_KERNELS; "
    "print(json.dumps({'changed': sorted(set(os.environ.items()) ^ set(before.items())), "
    "'env': {k: os.environ.get(k) for k in PORTABLE_KERNELS}}))"
)


# name: (code, environment on top of one without the pins). Each runs in a fresh process,
# and the three that import torch take a second or more of CPU each, so they all start
# together (the `probes` fixture): on two cores they overlap.
_PROBES = {
    "pinned": (_PINNED_PROBE + _PROBE, {}),
    "import_all": (_IMPORT_ALL, {}),
    "switched_off": (_PINNED_PROBE + _ENV_PROBE, {NATIVE_KERNELS_VARIABLE: "1"}),
    "overridden": (_PINNED_PROBE + _PROBE, {"ATEN_CPU_CAPABILITY": "default"}),
}


@pytest.fixture(scope="module")
def probes() -> Iterator[dict[str, subprocess.Popen]]:
    clean = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    clean.pop(NATIVE_KERNELS_VARIABLE, None)
    started = {
        name: subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env=clean | {"PYTHONPATH": str(REPO_ROOT)} | env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (code, env) in _PROBES.items()
    }
    yield started
    for process in started.values():  # a test that failed early leaves none running
        if process.poll() is None:
            process.kill()
        process.communicate()


def _result(probes: dict[str, subprocess.Popen], name: str) -> dict:
    stdout, stderr = probes[name].communicate(timeout=600)  # the timeout only catches hangs
    assert probes[name].returncode == 0, stderr
    return json.loads(stdout)


def test_the_entry_points_pin_the_kernels_before_torch_runs_one(probes):
    probe = _result(probes, "pinned")
    assert probe["env"] == PORTABLE_KERNELS
    assert probe["capability"] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_importing_the_library_changes_nothing_in_the_environment(probes):
    probe = _result(probes, "import_all")
    assert probe["changed"] == []
    assert probe["env"] == dict.fromkeys(PORTABLE_KERNELS)


def test_every_entry_point_pins_the_kernels_first():
    for entry_point in sorted((REPO_ROOT / "stages").glob("[!_]*.py")):
        body = entry_point.read_text().split('if __name__ == "__main__":\n', 1)[1]
        assert body.lstrip().startswith("pin_portable_kernels()"), entry_point.name


def test_the_pins_can_be_switched_off_or_overridden(probes):
    assert _result(probes, "switched_off")["env"] == dict.fromkeys(PORTABLE_KERNELS)
    assert _result(probes, "overridden")["capability"] == "DEFAULT"


def test_make_deterministic_switches_torch_to_deterministic_kernels():
    make_deterministic(seed=1, threads=1)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.get_num_threads() == 1
