"""`mnist-pipeline export --format onnx`: any network, raw pixels in, and the same answers
from onnxruntime as from torch on the test split."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.model.ensemble import Ensemble
from mnist_pipeline.model.inference import batch_size, prepare_for_inference
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.model.networks import MNIST_MEAN, MNIST_STD
from mnist_pipeline.model.predict import class_probabilities
from mnist_pipeline.serving.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from tests.conftest import REPO_ROOT
from tests.trained_models import bundled_split, tiny_model_file

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime (onnx extra) is missing")
# torch marks its TorchScript exporter deprecated; docs/serving.md says why it is used.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def test_split():
    return bundled_split()[1]  # the pipeline's 1,000 test digits


def onnx_probabilities(path, images: np.ndarray, images_per_batch: int) -> np.ndarray:
    """In the batches `predict` would use, so an ensemble's parity check stays in memory."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = [images[start : start + images_per_batch]
               for start in range(0, len(images), images_per_batch)]  # fmt: skip
    return np.concatenate([session.run([OUTPUT_NAME], {INPUT_NAME: b})[0] for b in batches])


def assert_same_answers(network: nn.Module, path, images: np.ndarray) -> None:
    expected = class_probabilities(network, images)  # what `predict` computes
    got = onnx_probabilities(path, images, batch_size(prepare_for_inference(network), len(images)))
    assert got.shape == (len(images), 10)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_cli_export_matches_torch_on_the_test_split(arch, tmp_path, monkeypatch, test_split):
    model_path = tiny_model_file(tmp_path / "model.safetensors", arch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--model", str(model_path)])
    assert result.exit_code == 0, result.output
    output = tmp_path / "data" / "model.onnx"  # the default path
    assert "wrote data/model.onnx" in result.stderr
    network, _ = load_model(model_path)
    assert_same_answers(network, output, test_split.images)


@pytest.mark.parametrize("tta", [False, True])
def test_an_ensemble_exports_like_one_network(tta, tmp_path, test_split):
    members = [load_model(tiny_model_file(tmp_path / f"{arch}.safetensors", arch))[0]
               for arch in ("mlp", "cnn")]  # fmt: skip
    background = -MNIST_MEAN / MNIST_STD  # test-time shifts fill the edge with blank pixels
    ensemble = Ensemble(members, tta=tta, background=background).eval()
    export_onnx(ensemble, tmp_path / "ensemble.onnx")
    assert_same_answers(ensemble, tmp_path / "ensemble.onnx", test_split.images)


def test_graph_takes_raw_pixels_with_any_batch_size(tmp_path):
    network, _ = load_model(tiny_model_file(tmp_path / "model.safetensors", "cnn"))
    path = tmp_path / "model.onnx"
    export_onnx(network, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()
    assert (pixels.name, pixels.type) == (INPUT_NAME, "tensor(uint8)")
    assert pixels.shape[1:] == [1, 28, 28]
    assert isinstance(pixels.shape[0], str)  # a named, dynamic batch dimension
    for batch in (1, 3, 257):
        images = np.random.default_rng(batch).integers(0, 256, (batch, 1, 28, 28), np.uint8)
        assert_same_answers(network, path, images)


def test_export_of_a_bad_model_file_fails_cleanly_and_keeps_the_old_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.onnx").write_bytes(b"earlier export")
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04pickle")
    result = CliRunner().invoke(app, ["export", "--model", "bad.safetensors"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: bad.safetensors: not a safetensors model file")
    assert (tmp_path / "data" / "model.onnx").read_bytes() == b"earlier export"
    result = CliRunner().invoke(app, ["export", "--format", "tflite"])
    assert result.exit_code == 2  # typer refuses formats it does not know
