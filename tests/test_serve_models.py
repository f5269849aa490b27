"""Model files and output paths for predict, serve and export alike: anything but a
regular file is one line (a FIFO never hangs), non-finite weights are refused at load, a
model that cannot predict is never served, and export checks its output as predict does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.serving import server
from mnist_pipeline.serving.app import create_app
from mnist_pipeline.serving.inference import Predictor
from mnist_pipeline.serving.model_info import describe_model
from tests.conftest import REPO_ROOT, refused
from tests.trained_models import tiny_model_file

HANG_S = 120  # only catches a hang


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("models") / "model.safetensors")


@pytest.fixture
def project(tmp_path, monkeypatch, good_model) -> Path:
    """A folder with params.yaml, a good model, a digit CSV, and no server ever started."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["runtime"]["threads"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.safetensors").write_bytes(good_model.read_bytes())
    (tmp_path / "digits.csv").write_text(",".join(["0"] * 784) + "\n")
    started = []
    monkeypatch.setattr(server, "run_server", lambda *args, **kwargs: started.append(kwargs))
    return tmp_path


def scaled_model(source: Path, target: Path, factor: float) -> Path:
    """The model with every weight multiplied by `factor` (inf * 0 = NaN: all NaN)."""
    model, config = load_model(source)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(factor)
    save_model(model, config, target)
    return target


COMMANDS = {
    "predict": ["predict", "--input", "digits.csv", "--output", "out.csv"],
    "serve": ["serve", "--metrics", "none.json", "--lock", "none.lock"],
    "export": ["export", "--output", "model.onnx"],
}


def one_error_line(args: list[str], *fragments: str) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_as_model_is_one_line(project, command):
    (project / "folder.safetensors").mkdir()
    one_error_line([*COMMANDS[command], "--model", "folder.safetensors"], "is a folder")


@pytest.mark.parametrize("command", COMMANDS)
def test_non_finite_weights_are_refused_at_load(project, command):
    scaled_model(project / "data" / "model.safetensors", project / "nan.safetensors", float("nan"))
    one_error_line([*COMMANDS[command], "--model", "nan.safetensors"],
                   "nan.safetensors: tensor", "non-finite values")  # fmt: skip
    assert not (project / "out.csv").exists()
    assert not (project / "model.onnx").exists()


def test_a_fifo_as_model_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def load() -> None:
        try:
            load_model(fifo)
        except PipelineError as err:
            outcome.append(str(err))

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(HANG_S)
    assert not loader.is_alive(), "load_model waited on a FIFO"
    assert outcome == [f"{fifo}: is a FIFO, not a regular file; expected a model file "
                       "written by `train`"]  # fmt: skip
    refused(lambda: load_model(Path("/dev/null")), "/dev/null: is a character device")


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_as_model_never_hangs_a_command(project, command):
    os.mkfifo(project / "fifo.safetensors")
    args = [
        sys.executable,
        "-m",
        "mnist_pipeline",
        *COMMANDS[command],
        "--model",
        "fifo.safetensors",
    ]
    if command == "serve":
        args += ["--port", "0"]  # were it to start, it would not clash with anything
    done = subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=HANG_S,
                          env=os.environ | {"PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: fifo.safetensors: is a FIFO, not a regular file; expected a model file "
        "written by `train`"
    ]


def test_a_model_whose_probe_fails_is_not_served(project):
    # Finite weights, but so large that every activation overflows: NaN probabilities.
    scaled_model(project / "data" / "model.safetensors", project / "huge.safetensors", 1e30)
    one_error_line([*COMMANDS["serve"], "--model", "huge.safetensors"],
                   "huge.safetensors: a probe prediction at start-up failed")  # fmt: skip


def test_health_is_ok_only_if_the_probe_succeeded(project):
    from fastapi.testclient import TestClient

    path = scaled_model(project / "data" / "model.safetensors", project / "huge.safetensors", 1e30)
    model, config = load_model(path)
    info = describe_model(model, config, model_path=path, metrics_path=Path("-"),
                          lock_path=Path("-"))  # fmt: skip
    with TestClient(create_app(Predictor(model, 1), info)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failing"
        assert "not finite" in health.json()["detail"]
        answer = client.post("/predict", json={"pixels": [0] * 784})
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith("the model cannot serve")


def test_serve_warns_in_one_line_when_it_leaves_loopback(project):
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        result = CliRunner().invoke(app, [*COMMANDS["serve"], "--host", host])
        assert result.exit_code == 0, result.output
        assert "warning" not in result.stderr
    result = CliRunner().invoke(app, [*COMMANDS["serve"], "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: --host 0.0.0.0 exposes the server to the network with no authentication or "
        "TLS; put a reverse proxy in front (docs/serving.md)"
    ]


# --- export's output ------------------------------------------------------------------


def test_export_over_its_own_model_is_refused(project):
    before = (project / "data" / "model.safetensors").read_bytes()
    model = "data/model.safetensors"
    one_error_line(["export", "--model", model, "--output", model],
                   f"output is the same file as the input {model}")  # fmt: skip
    assert (project / "data" / "model.safetensors").read_bytes() == before


def test_export_to_a_fifo_a_device_or_a_folder_is_refused(project):
    os.mkfifo(project / "pipe.onnx")
    one_error_line(["export", "--output", "pipe.onnx"], "output is a FIFO, not a regular file")
    assert (project / "pipe.onnx").is_fifo()  # still a FIFO, not replaced by a file
    one_error_line(["export", "--output", "/dev/null"], "output is a device")
    (project / "folder").mkdir()
    one_error_line(["export", "--output", "folder"], "output is a folder")
    os.symlink(project / "nowhere", project / "dangling.onnx")
    one_error_line(["export", "--output", "dangling.onnx"], "a broken symbolic link")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter
def test_export_still_writes_a_regular_output(project):
    pytest.importorskip("onnx", reason="the onnx extra is missing")
    result = CliRunner().invoke(app, ["export", "--output", "model.onnx"])
    assert result.exit_code == 0, result.output
    assert (project / "model.onnx").stat().st_size > 0


@pytest.mark.parametrize("name", ["a*b.example", "*example", ""])
def test_a_malformed_allowed_host_is_one_line(project, name):
    one_error_line([*COMMANDS["serve"], "--allowed-host", name], "--allowed-host",
                   "'*.domain'")  # fmt: skip
