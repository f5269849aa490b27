"""bench/recipe_flops.py: FLOPs of a recipe, counted as the training loop runs the model."""

from __future__ import annotations

import pytest

from bench import recipe_flops
from bench.recipe_cv import FAST32 as FAST  # the 32-64-128 cnn, fixed: not the recipe file


def _conv_flops(side: int, c_in: int, c_out: int) -> int:
    return 2 * side * side * c_out * c_in * 9  # 3x3 conv, padding 1: one multiply-add = 2


def test_the_fast_cnn_counts_its_convolutions_and_linears():
    flops = recipe_flops.count_flops(FAST | {"model.tta": False, "train.precision": "fp32"})
    forward = (
        _conv_flops(28, 1, 32)
        + _conv_flops(14, 32, 64)
        + _conv_flops(7, 64, 128)
        + 2 * (128 * 3 * 3 * 128 + 128 * 10)
    )
    assert flops["inference_per_image"] == forward
    # Backward: the gradient of every weight, and of every input but the image's.
    assert flops["train_per_image"] == 3 * forward - _conv_flops(28, 1, 32)
    assert flops["parameters"] == 241_770


def test_members_multiply_training_and_shifts_multiply_inference():
    one = recipe_flops.count_flops(FAST | {"model.tta": False})
    three = recipe_flops.count_flops(FAST | {"model.tta": True, "model.members": 3})
    assert three["train_per_image"] == pytest.approx(3 * one["train_per_image"])
    assert three["inference_per_image"] == pytest.approx(3 * 5 * one["inference_per_image"])
    total = recipe_flops.recipe_flops(FAST | {"train.epochs": 4}, n_images=100)
    assert total["train_total"] == pytest.approx(4 * 100 * one["train_per_image"])


def test_the_table_lists_the_recipes(capsys):
    assert recipe_flops.main(["--recipes", "default,fast32"]) == 0
    table = capsys.readouterr().out
    assert "| fast32 | 241,770 | 10 x 1 | 45.1 | 2,032 | 76.0 |" in table
