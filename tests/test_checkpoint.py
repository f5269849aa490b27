"""Checkpoint and resume: a run stopped after any epoch and started again ends with the
same model bytes as an uninterrupted run; checkpoints of other runs are ignored."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import mnist_pipeline.training.fingerprint as fingerprint_module
from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.params import parse_params
from mnist_pipeline.model.model_file import save_model
from mnist_pipeline.training.checkpoint import (
    CHECKPOINT_FILE,
    GITIGNORE,
    Checkpoint,
    CheckpointStore,
)
from mnist_pipeline.training.distributed import SINGLE_PROCESS
from mnist_pipeline.training.fingerprint import made_with
from mnist_pipeline.training.loop import train_model
from tests.conftest import (
    FANCY_TRAIN,
    REPO_ROOT,
    TINY_CHECKPOINT_MODEL,
    TINY_CNN,
    synthetic_digits,
    tiny_checkpoint,
    training_env,
    write_params,
)

# The tutorial's recipe (mlp, full batch, adam) and every option at once (cnn, augmentation,
# mini-batches, onecycle, validation split, keep=best).
RECIPES = {
    "tutorial": ({"hidden": [32, 16]}, {"epochs": 4, "lr": 0.01}),
    "fancy": (TINY_CNN, FANCY_TRAIN | {"epochs": 4}),
}


def _params(repo_params: dict, recipe: str):
    raw = copy.deepcopy(repo_params)
    model, train = RECIPES[recipe]
    raw["model"].update(model)
    raw["train"].update(train)
    raw["runtime"]["threads"] = 1
    return parse_params(raw)


def _bytes(tmp_path: Path, result) -> bytes:
    path = tmp_path / "model.safetensors"
    save_model(result.model, result.config, path)
    return path.read_bytes()


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_resuming_after_any_epoch_gives_the_same_model(tmp_path, repo_params, recipe):
    params = _params(repo_params, recipe)
    digits = synthetic_digits(60)
    saved: list[bytes] = []

    def keep(state: Checkpoint):  # as the file would hold it: saved, then read back safely
        buffer = io.BytesIO()
        torch.save(state.to_dict(), buffer)
        saved.append(buffer.getvalue())

    run = train_model(digits, params.model, params.train, 1, save_checkpoint=keep)
    uninterrupted = _bytes(tmp_path, run)
    assert len(saved) == params.train.epochs
    for epoch in [1, params.train.epochs - 1]:
        state = Checkpoint.from_dict(torch.load(io.BytesIO(saved[epoch - 1]), weights_only=True))
        assert state.epoch == epoch
        resumed = train_model(digits, params.model, params.train, 1, resume=state)
        assert _bytes(tmp_path, resumed) == uninterrupted, f"resumed after epoch {epoch}"
        assert resumed.history[:epoch] == run.history[:epoch]  # from the checkpoint
        assert [stats.train_loss for stats in resumed.history] == [
            stats.train_loss for stats in run.history
        ]


def _store(folder: Path, **fingerprint) -> CheckpointStore:
    fingerprint = {"model": TINY_CHECKPOINT_MODEL, "train": {"epochs": 4}, **fingerprint}
    return CheckpointStore(folder, fingerprint, SINGLE_PROCESS, save_every=0)


def test_checkpoint_of_other_params_or_garbage_is_ignored_with_a_message(tmp_path, capsys):
    store = _store(tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint/.gitignore").read_text() == GITIGNORE
    assert store.load() is None  # nothing there yet
    store.save(tiny_checkpoint(2))
    assert _store(tmp_path / "checkpoint").load().epoch == 2
    assert "resuming from" in capsys.readouterr().err
    other = _store(tmp_path / "checkpoint", train={"epochs": 9})
    assert other.load() is None
    message = capsys.readouterr().err
    assert "ignoring" in message
    assert "made with train.epochs = 4, this run has 9" in message
    # A pickle that would run code is refused by weights_only, and so ignored too.
    (tmp_path / "checkpoint" / CHECKPOINT_FILE).write_bytes(b"\x80\x02cos\nsystem\n.")
    assert store.load() is None
    assert "not a checkpoint that can be loaded safely" in capsys.readouterr().err
    store.clear()
    assert not (tmp_path / "checkpoint" / CHECKPOINT_FILE).exists()


def _fingerprint(tmp_path: Path, repo_params: dict) -> dict:
    params = _params(repo_params, "tutorial")
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(20))
    return made_with(
        model_params=params.model,
        train_params=params.train,
        threads=1,
        train_path=tmp_path / "train.safetensors",
        cluster=SINGLE_PROCESS,
        bf16=False,
    )


def test_the_fingerprint_names_the_software(tmp_path, repo_params):
    versions = _fingerprint(tmp_path, repo_params)["versions"]
    assert versions["torch"] == torch.__version__
    assert type(versions["torch"]) is str  # torch's own version type is refused on load
    assert versions["code_sha256"] == fingerprint_module.code_version()
    assert (versions["cuda"], versions["cudnn"]) == (None, None)  # on the CPU


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (("torch", "__version__", "9.9.9"), "made with versions.torch = "),
        (
            ("fingerprint", "code_version", lambda: "other code"),
            "made with versions.code_sha256 = ",
        ),
    ],
)
def test_checkpoint_of_other_software_is_ignored_with_a_message(
    tmp_path, repo_params, monkeypatch, capsys, patch, expected
):
    folder = tmp_path / "checkpoint"
    fingerprint = _fingerprint(tmp_path, repo_params)
    CheckpointStore(folder, fingerprint, SINGLE_PROCESS, save_every=0).save(
        tiny_checkpoint(2, model=fingerprint["model"])
    )
    module, name, value = patch
    monkeypatch.setattr(torch if module == "torch" else fingerprint_module, name, value)
    store = CheckpointStore(folder, _fingerprint(tmp_path, repo_params), SINGLE_PROCESS)
    assert store.load() is None
    message = capsys.readouterr().err
    assert message.startswith(f"ignoring {folder / CHECKPOINT_FILE}: {expected}")
    assert message.endswith("; training from scratch, overwriting it\n")


def test_the_code_version_changes_with_any_source_file(tmp_path):
    package = tmp_path / "mnist_pipeline"
    no_caches = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO_ROOT / "mnist_pipeline", package, ignore=no_caches)
    before = fingerprint_module.code_version(package)
    assert before == fingerprint_module.code_version()  # the same files
    with (package / "training" / "loop.py").open("a") as file:
        file.write("# a change\n")
    fingerprint_module.code_version.cache_clear()
    assert fingerprint_module.code_version(package) != before


class CrashError(Exception):
    """Stands in for a kill: raised by the progress callback after some epoch."""


def _train_command(workdir: Path, model: str):
    return CliRunner().invoke(app, ["train", "--train-data", "train.safetensors", "--model", model])


def test_train_command_resumes_after_a_crash_and_cleans_up(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["train"]["epochs"] = 4
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    assert _train_command(tmp_path, "uninterrupted.safetensors").exit_code == 0
    assert os.listdir(tmp_path / "data/checkpoint") == [".gitignore"]  # a finished run

    import mnist_pipeline.training.progress

    def crash_after_epoch_2(stats):
        if stats.epoch == 2:
            raise CrashError

    monkeypatch.setattr(mnist_pipeline.training.progress, "epoch_line", crash_after_epoch_2)
    crashed = _train_command(tmp_path, "resumed.safetensors")
    assert isinstance(crashed.exception, CrashError)
    assert (tmp_path / "data/checkpoint" / CHECKPOINT_FILE).is_file()
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    resumed = _train_command(tmp_path, "resumed.safetensors")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from data/checkpoint/train.pt: 2 epoch(s) already done" in resumed.stderr
    assert "Epoch [1/4]" not in resumed.stderr
    assert (tmp_path / "resumed.safetensors").read_bytes() == (
        tmp_path / "uninterrupted.safetensors"
    ).read_bytes()
    curve = (tmp_path / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in curve[1:]] == ["1", "2", "3", "4"]  # one per epoch
    assert os.listdir(tmp_path / "data/checkpoint") == [".gitignore"]
    timing = json.loads((tmp_path / "dvclive/timing.json").read_text())
    assert timing["images_per_second"] > 0


def _start_training(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_pipeline", "train", "--train-data", "train.safetensors"],
        cwd=workdir,
        env=training_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.slow
def test_kill_9_then_the_same_command_finishes_with_the_same_model(tmp_path, tiny_params):
    tiny_params["model"].update(TINY_CNN)
    tiny_params["train"].update(FANCY_TRAIN | {"epochs": 8})
    for name in ["uninterrupted", "killed"]:
        (tmp_path / name).mkdir()
        write_params(tmp_path / name / "params.yaml", tiny_params)
        save_prepared(tmp_path / name / "train.safetensors", synthetic_digits(120))
    assert _start_training(tmp_path / "uninterrupted").wait() == 0

    killed = tmp_path / "killed"
    training = _start_training(killed)
    for line in training.stderr:  # the checkpoint is written before the epoch's line
        if line.startswith("Epoch [2/8]"):
            training.send_signal(signal.SIGKILL)
            break
    assert training.wait() == -signal.SIGKILL
    checkpoint = torch.load(killed / "data/checkpoint" / CHECKPOINT_FILE, weights_only=True)
    assert 2 <= checkpoint["epoch"] < 8
    assert not (killed / "data/model.safetensors").exists()

    again = _start_training(killed)
    _, stderr = again.communicate()
    assert again.returncode == 0, stderr
    assert f"{checkpoint['epoch']} epoch(s) already done" in stderr
    model = "data/model.safetensors"
    assert (killed / model).read_bytes() == (tmp_path / "uninterrupted" / model).read_bytes()
    assert os.listdir(killed / "data/checkpoint") == [".gitignore"]
    rows = (killed / "dvclive/plots/metrics/val/accuracy.tsv").read_text().splitlines()
    assert len(rows) == 1 + 8


def test_dvc_yaml_keeps_the_checkpoint_folder_between_runs():

    outs = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["train"]["outs"]
    declared = {next(iter(out)): out[next(iter(out))] for out in outs if isinstance(out, dict)}
    assert declared["data/checkpoint"] == {"persist": True, "cache": False}
    # The committed folder holds exactly what a finished run leaves, so clones are clean.
    assert (REPO_ROOT / "data/checkpoint/.gitignore").read_text() == GITIGNORE
