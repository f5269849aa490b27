"""Training: the canonical loop, seeded, so the same params give the same model."""

from __future__ import annotations

import torch

from stages.params import ModelParams, TrainParams
from stages.train import train_model

MODEL = ModelParams(arch="mlp", hidden=[32, 16], dropout=0.2)


def _train(digits, **overrides):
    settings = {"epochs": 15, "lr": 0.01, "batch_size": None, "seed": 0} | overrides
    return train_model(digits, MODEL, TrainParams(**settings), threads=1)


def test_training_learns_the_synthetic_digits(digits):
    model, config, losses = _train(digits)
    assert config.hidden == (32, 16)
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
        MODEL,
        TrainParams(epochs=3, lr=0.01, batch_size=25, seed=0),
        threads=1,
        report=lambda epoch, epochs, loss: seen.append((epoch, epochs)),
    )
    assert seen == [(1, 3), (2, 3), (3, 3)]
