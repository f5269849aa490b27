"""The package uses none of the ops that make bytes differ between Intel and AMD CPUs
(mnist_pipeline/core/portable_ops.py), and the scan finds one planted in a copy."""

from __future__ import annotations

import shutil

import pytest

from mnist_pipeline.core.portable_ops import scan
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mnist_pipeline"


def test_the_package_avoids_every_op_that_is_not_portable():
    assert scan(PACKAGE) == []


@pytest.fixture
def copy(tmp_path):
    target = tmp_path / "mnist_pipeline"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.mark.parametrize(
    ("line", "op"),
    [
        ("probabilities = log_probs.exp()", "exp runs MKL"),
        ("probabilities = torch.exp(log_probs)", "exp runs MKL"),
        ("mean = torch.logsumexp(x, dim=0)", "logsumexp"),
        ("angle = torch.cos(x)", "vector math on CPU tensors"),
        ("root = state.sqrt()", "vector math on CPU tensors"),
        ("optimizer = torch.optim.Adam(parameters, foreach=True)", "for-each Adam"),
    ],
)
def test_a_planted_op_is_found(copy, line, op):
    path = copy / "model" / "predict.py"
    path.write_text(
        path.read_text() + f"\n\ndef planted(x, log_probs, state, parameters):\n    {line}\n"
    )
    found = scan(copy)
    assert len(found) == 1, found
    assert found[0].startswith(f"model/predict.py:{len(path.read_text().splitlines())}: {line}")
    assert op in found[0]


def test_comments_strings_and_python_math_are_not_ops(copy):
    path = copy / "model" / "predict.py"
    planted = "x = math.log(2) + np.log(3)  # not torch.exp(x)\ny = 'x.exp()'\n"
    path.write_text(path.read_text() + "\nimport math\n\nimport numpy as np\n\n" + planted)
    assert scan(copy) == []


def test_an_allowed_line_is_found_once_changed(copy):
    """The allowlist names whole lines: float32 cos in augmentation is found again."""
    path = copy / "training" / "augment.py"
    path.write_text(path.read_text().replace("torch.cos(angle.double())", "torch.cos(angle)"))
    found = scan(copy)
    assert len(found) == 1
    assert found[0].startswith("training/augment.py:")
