"""Every stage runs by hand from the CLI, with the same default paths as dvc.yaml."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.formats.csv_digits import write_csv_digits
from tests.conftest import synthetic_digits, write_params

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_params):
    """A project directory with tiny params, as a user would have after cloning."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", tiny_params)
    return tmp_path


def test_help_says_what_each_command_reads_and_writes():
    for command in ["split", "prepare", "train", "predict", "evaluate"]:
        result = invoke(command, "--help")
        assert result.exit_code == 0
        shown = " ".join(result.output.split())  # as a reader sees it, whatever the wrap
        assert "--params" in shown
        # The docstring's own sentences, not option help (which says "Where to write").
        assert "Reads " in shown, command
        assert "Writes " in shown, command


def test_stages_run_by_hand_end_to_end(workdir):
    assert invoke("split").exit_code == 0
    assert (workdir / "data/raw/train.csv").is_file()
    assert invoke("prepare").exit_code == 0
    assert (workdir / "data/prepared/test.safetensors").is_file()
    result = invoke("train")
    assert result.exit_code == 0, result.output
    assert "Epoch [3/3] Loss:" in result.stderr
    assert invoke("predict").exit_code == 0
    result = invoke("evaluate")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "metrics/metrics.json").read_text())
    assert metrics["test_images"] == 40
    assert 0 <= metrics["accuracy"] <= 1
    assert result.stdout == ""  # progress and summaries go to stderr


def test_predict_any_csv_with_or_without_labels(workdir):
    assert invoke("split").exit_code == 0
    assert invoke("prepare").exit_code == 0
    assert invoke("train").exit_code == 0
    digits = synthetic_digits(7)
    write_csv_digits(workdir / "mine.csv", digits)
    result = invoke("predict", "--input", "mine.csv", "--output", "mine_predictions.csv")
    assert result.exit_code == 0, result.output
    header = (workdir / "mine_predictions.csv").read_text().splitlines()[0]
    assert header.startswith("Predicted Value,True Value,Confidence,prob_0")

    unlabelled = "\n".join(
        line.split(",", 1)[1] for line in (workdir / "mine.csv").read_text().splitlines()
    )
    (workdir / "unlabelled.csv").write_text(unlabelled + "\n")
    result = invoke("predict", "--input", "unlabelled.csv", "--output", "unlabelled_out.csv")
    assert result.exit_code == 0, result.output
    lines = (workdir / "unlabelled_out.csv").read_text().splitlines()
    assert lines[0].startswith("Predicted Value,Confidence,prob_0")
    assert len(lines) == 8


def _assert_clean_failure(result, *fragments: str) -> None:
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message.startswith("error: ")
    assert len(message.splitlines()) == 1
    for fragment in fragments:
        assert fragment in message


def test_bad_params_fail_in_one_line(workdir, tiny_params):
    tiny_params["train"]["epoch"] = 5
    write_params(workdir / "params.yaml", tiny_params)
    result = invoke("train")
    _assert_clean_failure(result, "params.yaml", "did you mean 'train.epochs'?")


def test_bad_input_fails_in_one_line_and_keeps_old_outputs(workdir):
    assert invoke("split").exit_code == 0
    assert invoke("prepare").exit_code == 0
    prepared = workdir / "data/prepared/train.safetensors"
    before = prepared.read_bytes()
    train_csv = workdir / "data/raw/train.csv"
    lines = train_csv.read_text().splitlines()
    lines[4] = lines[4].replace(",0,", ",300,", 1)
    train_csv.write_text("\n".join(lines) + "\n")
    result = invoke("prepare")
    _assert_clean_failure(result, "data/raw/train.csv", "line 5", "0-255", "300")
    assert prepared.read_bytes() == before


def test_missing_model_is_a_clear_error(workdir):
    result = invoke("predict", "--model", "nowhere.safetensors")
    _assert_clean_failure(result, "nowhere.safetensors", "no such model file")
