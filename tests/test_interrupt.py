"""Ctrl-C during `train` keeps the newest epoch, says so in one line, and resumes exactly."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.training.checkpoint import CHECKPOINT_FILE, CheckpointStore
from mnist_pipeline.training.distributed import SINGLE_PROCESS
from tests.conftest import synthetic_digits, tiny_checkpoint, write_params


def _train(model: str):
    return CliRunner().invoke(app, ["train", "--train-data", "train.safetensors", "--model", model])


def test_ctrl_c_keeps_the_newest_epoch_and_running_again_resumes(
    tmp_path, monkeypatch, tiny_params
):
    monkeypatch.chdir(tmp_path)
    tiny_params["train"]["epochs"] = 4
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    assert _train("uninterrupted.safetensors").exit_code == 0

    import mnist_pipeline.training.progress

    def ctrl_c_after_epoch_2(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(mnist_pipeline.training.progress, "epoch_line", ctrl_c_after_epoch_2)
    interrupted = _train("resumed.safetensors")
    assert interrupted.exit_code == 130
    lines = interrupted.stderr.strip().splitlines()
    # Epochs take milliseconds here, far less than the 10 s between saves: the checkpoint
    # on disk is the one written at the interrupt.
    assert lines[-1] == (
        "interrupted: kept epoch 2 of 4 in data/checkpoint/train.pt; running train again "
        "with the same params resumes from there (`dvc repro` too)"
    )
    assert "Traceback" not in interrupted.stderr
    saved = torch.load(tmp_path / "data/checkpoint" / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 2
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)

    resumed = _train("resumed.safetensors")
    assert resumed.exit_code == 0, resumed.output
    assert "2 epoch(s) already done" in resumed.stderr
    assert (tmp_path / "resumed.safetensors").read_bytes() == (
        tmp_path / "uninterrupted.safetensors"
    ).read_bytes()
    assert os.listdir(tmp_path / "data/checkpoint") == [".gitignore"]


def test_ctrl_c_before_the_first_epoch_says_nothing_was_kept(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    import mnist_pipeline.training.loop

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist_pipeline.training.loop, "_train_epoch", interrupted)
    result = _train("model.safetensors")
    assert result.exit_code == 130
    assert "nothing kept" in result.stderr.strip().splitlines()[-1]


def test_checkpoints_are_written_every_few_seconds_not_every_epoch(tmp_path):
    store = CheckpointStore(tmp_path, {"train": {"epochs": 9}}, SINGLE_PROCESS, save_every=3600)
    path: Path = tmp_path / CHECKPOINT_FILE
    store.save(tiny_checkpoint(1))
    store.save(tiny_checkpoint(2))
    assert not path.exists()  # kept in memory: less than an hour since the start
    assert store.flush() == (2, 9)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    every_epoch = CheckpointStore(tmp_path, {"train": {"epochs": 9}}, SINGLE_PROCESS, save_every=0)
    every_epoch.save(tiny_checkpoint(3))
    assert torch.load(path, weights_only=True)["epoch"] == 3
