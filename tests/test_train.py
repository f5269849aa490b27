"""Training: the canonical loop, seeded, so the same params give the same model."""

from __future__ import annotations

import torch

from mnist_pipeline.core.params import TrainParams
from mnist_pipeline.training.loop import train_model
from tests.conftest import RECIPE, TINY_MLP

# The repository's training recipe; each test overrides what it is about.


def _train(digits, **overrides):
    settings = RECIPE | {"epochs": 15, "lr": 0.01, "batch_size": None, "seed": 0} | overrides
    model, config, history = train_model(
        digits, TINY_MLP, TrainParams.model_validate(settings), threads=1
    )
    return model, config, [stats.train_loss for stats in history]


def test_training_learns_the_synthetic_digits(digits):
    model, config, losses = _train(digits)
    assert config.hidden == [32, 16]
    assert len(losses) == 15
    assert losses[-1] < losses[0] / 2
    assert not model.training  # returned ready for prediction


def test_same_params_same_weights(digits):
    first, _, first_losses = _train(digits, batch_size=16)
    second, _, second_losses = _train(digits, batch_size=16)
    assert first_losses == second_losses
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_seed_changes_the_weights(digits):
    first, _, _ = _train(digits, epochs=1, seed=0)
    second, _, _ = _train(digits, epochs=1, seed=1)
    assert not torch.equal(
        first.state_dict()["layers.1.weight"], second.state_dict()["layers.1.weight"]
    )


def test_reports_every_epoch(digits):
    seen = []
    train_model(
        digits,
        TINY_MLP,
        TrainParams.model_validate(RECIPE | {"epochs": 3, "lr": 0.01, "batch_size": 25}),
        threads=1,
        report=lambda stats: seen.append((stats.epoch, stats.epochs)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
