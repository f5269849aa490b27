"""Issue 11, the rest of the pipeline: model files, params, predictions, training, checkpoints
and outputs. Each bad input ends in one `error:` line (or, for a checkpoint, a message and a
fresh start), never a traceback, and leaves earlier artifacts untouched."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import load_params, parse_params
from mnist_pipeline.core.predictions import read_predictions
from mnist_pipeline.formats.csv_digits import write_csv_digits
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.training import loop
from mnist_pipeline.training.checkpoint import CHECKPOINT_FILE, CheckpointStore, validate_checkpoint
from mnist_pipeline.training.distributed import SINGLE_PROCESS
from tests import hostile_files as make
from tests.conftest import REPO_ROOT, refused, synthetic_digits, tiny_checkpoint, write_params

# --- model files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"hidden": [100_000]}, "model config: 'hidden.0'"),
        ({"hidden": [10**9]}, "model config: 'hidden.0'"),
        ({"hidden": [-5]}, "model config: 'hidden.0'"),
        ({"hidden": [8] * 50}, "model config: 'hidden'"),
        ({"dropout": 5}, "model config: 'dropout'"),
        ({"dropout": float("inf")}, "model config: 'dropout'"),
        ({"hidden": [8.5]}, "model config: 'hidden.0'"),
        ({"arch": "transformer"}, "model config: 'arch'"),
        ({"format_version": 2}, "model format version 2"),
        ({"members": 10**6}, "model config: 'members'"),
        ({"tta": "yes"}, "model config: 'tta'"),
    ],
)
def test_model_config_is_checked_before_anything_is_built(tmp_path, monkeypatch, change, fragment):
    path = make.model_with_config(tmp_path, change)
    built = []
    monkeypatch.setattr("mnist_pipeline.model.model_file.build_model", lambda c: built.append(c))
    refused(lambda: load_model(path), str(path), fragment)
    assert built == []  # refused by the schema, before even the meta-device build


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"arch": "mlp"', "x" * 70_000])
def test_model_config_that_is_deep_broken_or_huge_json_is_refused(tmp_path, text):
    path = make.model_with_raw_config(tmp_path, text)
    refused(lambda: load_model(path), "no mnist-pipeline model config")


def test_weights_are_checked_against_the_header_before_loading(tmp_path):
    path = make.model_with_config(tmp_path, {"hidden": [16]})  # weights are for hidden [8]
    refused(lambda: load_model(path), "weights do not fit", "is F32 [8], expected F32 [16]")


def test_lying_safetensors_header_is_refused(tmp_path):
    path = make.model_with_config(tmp_path, {})
    data = bytearray(path.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    header["layers.1.weight"]["shape"] = [8, 784 * 1000]  # more than the bytes in the file
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_size :])
    refused(lambda: load_model(path), "tensor 'layers.1.weight' has a malformed header entry")


# --- params --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("train", "lr", float("inf"), "'train.lr' should be a finite number"),
        ("train", "lr", float("nan"), "'train.lr' should be a finite number"),
        ("train", "lr", 1e6, "'train.lr' should be less than or equal to 10"),
        ("train", "epochs", 10**9, "'train.epochs' should be less than or equal to 10000"),
        ("model", "hidden", [10**6], "'model.hidden.0' should be less than or equal to 8192"),
        ("model", "hidden", [8] * 9, "'model.hidden' list should have at most 8 items"),
        ("model", "channels", [10**5], "'model.channels.0' should be less than or equal to 1024"),
        ("runtime", "threads", 10**6, "'runtime.threads' should be less than or equal to 256"),
        ("train", "batch_size", 10**12, "'train.batch_size' should be less than or equal to"),
        ("train", "seed", 2**70, "'train.seed' should be less than or equal to"),
    ],
)
def test_params_reject_inf_and_absurd_sizes(repo_params, section, key, value, fragment):
    params = copy.deepcopy(repo_params)
    params[section][key] = value
    with pytest.raises(PipelineError, match=fragment):
        parse_params(params)


@pytest.mark.parametrize("key_line", ["  epochs: 50", "  dropout: 0.2", "  lr: 0.001"])
def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, key_line):
    text = make.yaml_alias_bomb((REPO_ROOT / "params.yaml").read_text(), key_line, levels=7)
    path = tmp_path / "other.yaml"
    path.write_text(text)
    started = time.perf_counter()
    message = refused(lambda: load_params(path), str(path))
    assert time.perf_counter() - started < 1
    assert len(message) < 300


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: " + "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("a: " + "9" * 5_000, "unusable YAML"),
        ("a: 2020-13-45", "unusable YAML"),
        ("x" * (2 << 20), "larger than"),
    ],
)
def test_params_yaml_that_cannot_be_loaded_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "other.yaml"
    path.write_text(text)
    refused(lambda: load_params(path), str(path), fragment)


def test_params_errors_name_the_params_file_in_use(tmp_path, repo_params):
    params = copy.deepcopy(repo_params)
    params["train"]["lr"] = float("inf")
    path = write_params(tmp_path / "experiment.yaml", params)
    refused(lambda: load_params(path), "experiment.yaml: 'train.lr'")


# --- predictions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "shown"), [("abc", "'abc'"), ("NaN", "NaN"), ("inf", "inf"), ("1.5", "1.5"), ("", "")]
)
def test_probabilities_must_be_finite_and_in_0_1(tmp_path, cell, shown):
    path = make.predictions_with(tmp_path, cell)
    refused(lambda: read_predictions(path), "line 3, column 'prob_3'", shown)


def test_predictions_table_is_numeric_after_the_checks(tmp_path):
    table = read_predictions(make.predictions_with(tmp_path, "1.0", "prob_7"))
    assert table["prob_3"].dtype == "float64"
    assert table["True Value"].tolist() == [3, 7]


# --- training ------------------------------------------------------------------------------


def test_non_finite_loss_stops_training_and_writes_no_model(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(40))
    real_loss = loop.summed_member_losses
    calls: list[int] = []

    def nan_from_epoch_2(*args):
        calls.append(1)
        loss = real_loss(*args)
        return loss * float("nan") if len(calls) > 1 else loss

    monkeypatch.setattr(loop, "summed_member_losses", nan_from_epoch_2)
    result = CliRunner().invoke(app, ["train", "--train-data", "train.safetensors"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: train: the training loss became nan in epoch 2")
    assert "first in batch 1" in lines[-1]
    assert "lower train.lr" in lines[-1]
    assert not Path("data/model.safetensors").exists()


# --- checkpoints ---------------------------------------------------------------------------


def _store(folder: Path) -> CheckpointStore:
    model = {"arch": "mlp", "hidden": [8], "dropout": 0.0, "channels": [1]}
    fingerprint = {"model": model, "train": {"epochs": 4}}
    return CheckpointStore(folder, fingerprint, SINGLE_PROCESS, save_every=0)


@pytest.mark.parametrize(
    "content",
    [
        {"format": 1},
        {"format": 1, "made_with": {}, "epoch": "2"},
        {"model": {"weight": torch.zeros(2)}},
        [1, 2, 3],
        torch.zeros(3),
    ],
)
def test_checkpoint_of_other_code_is_ignored_with_a_message(tmp_path, capsys, content):
    folder = tmp_path / "checkpoint"
    store = _store(folder)
    torch.save(content, folder / CHECKPOINT_FILE)
    assert store.load() is None
    assert "ignoring" in capsys.readouterr().err
    assert validate_checkpoint(content) is not None


def test_checkpoint_with_wrong_weights_is_ignored(tmp_path, capsys, repo_params):
    state = tiny_checkpoint(1)
    state.model["layers.1.weight"] = torch.zeros(3, 3)
    folder = tmp_path / "checkpoint"
    _store(folder).save(state)
    assert _store(folder).load() is None
    assert "does not fit its model params' network" in capsys.readouterr().err


def test_stale_temp_files_of_a_killed_save_are_swept(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    stale = [folder / f".{CHECKPOINT_FILE}.abc123.tmp", folder / "..gitignore.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = folder / "notes.txt"
    keep.write_text("not ours")
    _store(folder)
    assert not any(path.exists() for path in stale)
    assert keep.exists()


def _rank_main(rank: int, folder: str, init_file: str, results: str) -> None:
    """One of two ranks: only rank 0's folder holds the checkpoint (as on another machine)."""
    import torch.distributed as dist

    from mnist_pipeline.training.distributed import Cluster

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cluster = Cluster(rank=rank, world_size=2)
        mine = Path(folder) / str(rank)
        model = {"arch": "mlp", "hidden": [8], "dropout": 0.0, "channels": [1]}
        # Rank 1's fingerprint even differs: it must follow rank 0's decision anyway.
        fingerprint = {"model": model, "train": {"epochs": 4 + rank}}
        loaded = CheckpointStore(mine, fingerprint, cluster).load()
        epoch = None if loaded is None else loaded.epoch
        Path(results, str(rank)).write_text(json.dumps(epoch))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes, each importing torch and joining a gloo group
def test_rank_0_decides_resume_for_every_rank(tmp_path, repo_params):
    import torch.multiprocessing as mp

    (tmp_path / "0").mkdir()
    _store(tmp_path / "0").save(tiny_checkpoint(2))
    results = tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank_main, args=(str(tmp_path), str(tmp_path / "init"), str(results)), nprocs=2)
    assert [json.loads((results / str(rank)).read_text()) for rank in (0, 1)] == [2, 2]


# --- outputs -------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_params) -> Path:
    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(tiny_params)
    params["train"]["epochs"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_csv_digits(Path("data/raw/train.csv"), synthetic_digits(40))
    write_csv_digits(Path("data/raw/test.csv"), synthetic_digits(20, seed=1))
    for command in ("prepare", "train", "predict"):
        assert CliRunner().invoke(app, [command]).exit_code == 0
    return tmp_path


def _fails_in_one_line(args: list[str], *fragments: str) -> None:
    files = {p: p.read_bytes() for p in Path(".").rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert {p: p.read_bytes() for p in Path(".").rglob("*") if p.is_file()} == files


def test_outputs_that_are_folders_inputs_or_unwritable_are_refused(project):
    Path("out_dir").mkdir()
    _fails_in_one_line(["predict", "--output", "out_dir"], "out_dir: output is a folder")
    _fails_in_one_line(
        ["predict", "--input", "data/raw/test.csv", "--output", "data/raw/test.csv"],
        "same file as the input",
    )
    Path("blocker").write_text("a file, not a folder")
    _fails_in_one_line(["predict", "--output", "blocker/predictions.csv"], "is not a folder")
    _fails_in_one_line(["prepare", "--train-out", "data/raw/train.csv"], "same file as the input")
    _fails_in_one_line(["prepare", "--test-out", "data/prepared/train.safetensors"], "two")
    _fails_in_one_line(["evaluate", "--metrics", "out_dir"], "output is a folder")
    _fails_in_one_line(["evaluate", "--pictures", "blocker"], "not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_unwritable_output_folder_is_refused(project):
    Path("locked").mkdir(mode=0o500)
    _fails_in_one_line(["predict", "--output", "locked/p.csv"], "cannot write the output")


def test_output_folder_that_refuses_files_is_one_line(project, monkeypatch):
    """Root ignores permissions, so a read-only file system is stood in for by its error."""
    import mnist_pipeline.core.artifacts

    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(mnist_pipeline.core.artifacts.tempfile, "mkstemp", read_only)
    _fails_in_one_line(["predict", "--output", "elsewhere/p.csv"], "cannot write the output")


def test_params_key_given_twice_is_refused(tmp_path):
    text = (
        (REPO_ROOT / "params.yaml").read_text().replace("  epochs: 50", "  epochs: 50\n  epochs: 5")
    )
    path = tmp_path / "params.yaml"
    path.write_text(text)
    line = text.splitlines().index("  epochs: 5") + 1
    refused(lambda: load_params(path), "key 'epochs' given twice", f"line {line},")
    merged = "base: &base {a: 1}\nother:\n  <<: *base\n  a: 2\n"
    path.write_text(merged)  # a merge key that is then overridden is not a duplicate
    refused(lambda: load_params(path), "unknown key 'base'")
