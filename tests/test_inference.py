"""Scoring fast: batch norm folded where max-pool allows it, channels-last, batches sized by
a memory budget that counts members and test-time shifts; the same answers as the plain
eval-mode forward (to the last bits for a cnn, exactly for the mlp)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.model.ensemble import TTA_SHIFTS
from mnist_pipeline.model.inference import (
    ACTIVATION_BUDGET,
    MAX_BATCH,
    batch_size,
    images_per_batch,
    inference_plan,
    network_activation_bytes,
    prepare_for_inference,
)
from mnist_pipeline.model.networks import build_model, scale_pixels
from mnist_pipeline.model.predict import class_probabilities

CNN = ModelParams(arch="cnn", hidden=[32], dropout=0.3, channels=[8, 16, 32])


def trained_looking(config: ModelParams, *, negative_block: int | None = None) -> nn.Module:
    """A model whose batch norms have running statistics and scales a trained one could have;
    the block `negative_block` gets some negative scales (gamma < 0)."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    with torch.no_grad():
        for index, norm in enumerate(norms):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.2, 3.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.normal_()
            if index == negative_block:
                norm.weight[::2] *= -1
    return model


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)


def plain_probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """The eval-mode forward as written, unprepared: what the folded copy must agree with."""
    with torch.inference_mode():
        return torch.softmax(model.eval()(scale_pixels(torch.from_numpy(images))), 1).numpy()


def test_folding_removes_every_batch_norm_and_keeps_the_answers():
    model = trained_looking(CNN)
    prepared = prepare_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert all(m.bias is not None for m in prepared.modules() if isinstance(m, nn.Conv2d))
    images = pixels(64)
    expected = plain_probabilities(model, images)
    got = class_probabilities(prepared, images)
    np.testing.assert_allclose(got, expected, atol=2e-6, rtol=0)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_a_block_with_negative_scales_keeps_its_batch_norm():
    """max(s * a) = s * max(a) only for s >= 0: folding a negative scale would move it
    before the max-pool and change which value the pool picks."""
    model = trained_looking(CNN, negative_block=1)
    prepared = prepare_for_inference(model)
    kept = [m for m in prepared.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(kept) == 1
    assert kept[0].num_features == CNN.channels[1]
    images = pixels(64)
    np.testing.assert_allclose(
        class_probabilities(prepared, images), plain_probabilities(model, images), atol=2e-6
    )


def test_the_model_handed_in_is_left_as_it_is():
    model = trained_looking(CNN)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.train()
    prepared = prepare_for_inference(model)
    assert prepared is not model
    assert model.training
    assert all(torch.equal(before[name], t) for name, t in model.state_dict().items())
    assert prepare_for_inference(prepared) is prepared  # prepared once, e.g. by a server


def test_the_mlp_scores_to_the_same_bytes_as_before():
    """No convolutions: only a copy, in one batch up to 4,096 images as `predict` always
    did, so the default pipeline's predictions keep their bytes."""
    torch.manual_seed(0)
    tutorial = ModelParams(arch="mlp", hidden=[392, 196, 98], dropout=0.2, channels=[])
    mlp = build_model(tutorial).eval()
    assert batch_size(prepare_for_inference(mlp), 10_000) == MAX_BATCH
    images = pixels(300)
    np.testing.assert_array_equal(
        class_probabilities(mlp, images), plain_probabilities(mlp, images)
    )


def test_cnn_scores_are_repeatable_and_do_not_depend_on_the_batching():
    model = trained_looking(CNN.model_copy(update={"members": 2, "tta": True}))
    images = pixels(50)
    first = class_probabilities(model, images)
    np.testing.assert_array_equal(first, class_probabilities(model, images))
    # Batches of 8 or more images compute each image the same way (smaller ones take
    # other kernels: gemv for one row), so the budget's batch size doesn't show.
    prepared = prepare_for_inference(model)
    inference_plan(prepared).images_per_batch = 10
    np.testing.assert_array_equal(class_probabilities(prepared, images), first)


@pytest.mark.parametrize(("members", "tta"), [(1, False), (5, False), (5, True)])
def test_batches_fit_the_budget_with_every_member_and_shift(members, tta):
    config = ModelParams(arch="cnn", hidden=[128], dropout=0.3, channels=[32, 64, 128])
    model = build_model(config.model_copy(update={"members": members, "tta": tta}))
    batch = images_per_batch(model)
    shifts = len(TTA_SHIFTS) if tta else 1
    one_pass = network_activation_bytes(build_model(config))  # conv1's output alone is 100 KB
    assert one_pass > 32 * 28 * 28 * 4
    assert batch * (one_pass + members * shifts * 10 * 4) <= ACTIVATION_BUDGET
    assert batch >= 64  # still big batches: the arithmetic, not the calls, sets the pace
    assert images_per_batch(model, budget=1) == 1
