"""On a machine with a CUDA GPU: bench/gpu_verify.py's checks, one test each.

The script runs once per session (about 3-5 minutes on one GPU) and each test reads its
check's verdict. Without a GPU every test skips, saying so; CI has none. The same checks
run on the CPU, where they can, in tests/test_device.py (a smoke run, marked slow).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch"),
]

sys.path.insert(0, str(REPO_ROOT / "bench"))
import gpu_verify  # noqa: E402 (bench/ is not a package)

CHECKS = [(group, name) for group in gpu_verify.GROUPS for name in gpu_verify.checks_of(group)]
# May skip on a GPU too, with a reason: serving has no GPU path (see the check's detail).
MAY_SKIP = {"ONNX export and served model on GPU"}


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-verify")
    gpu_verify.main(["--out", str(out), "--device", "cuda"])
    return json.loads(Path(out / "summary.json").read_text())


@pytest.mark.parametrize(("group", "name"), CHECKS, ids=[name for _, name in CHECKS])
def test_check_passes_on_the_gpu(summary, group, name):
    rows = [row for row in summary["checks"] if (row["group"], row["check"]) == (group, name)]
    assert len(rows) == 1, f"{name} reported {len(rows)} times"
    row = rows[0]
    allowed = {"PASS", "SKIP"} if name in MAY_SKIP else {"PASS"}
    assert row["status"] in allowed, f"{name}: {row['status']} {row['detail']}"


def test_no_determinism_alerts_on_the_gpu(summary):
    """Zero alerts: torch.use_deterministic_algorithms can then raise instead of warning."""
    row = next(row for row in summary["checks"] if row["check"].startswith("determinism alerts"))
    alerts = [w for w in summary["warnings"] if "deterministic" in w["message"]]
    assert row["status"] == "PASS", (row["detail"], alerts)
