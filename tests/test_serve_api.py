"""The HTTP API of `mnist-pipeline serve`, in process: answers, bad input, limits, threads."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from torch import nn

from mnist_pipeline.core.limits import MAX_IMAGE_PIXELS
from mnist_pipeline.formats.images import read_image
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.model.predict import class_probabilities
from mnist_pipeline.serving.app import build_app, create_app
from mnist_pipeline.serving.inference import Predictor
from mnist_pipeline.serving.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from mnist_pipeline.serving.model_info import describe_model
from mnist_pipeline.serving.schemas import Prediction
from tests.conftest import REPO_ROOT, synthetic_digits
from tests.trained_models import tiny_model_file

PAGE_FILES = sorted((REPO_ROOT / "mnist_pipeline/serving/page").iterdir())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("serve") / "model.safetensors")


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    missing = tmp_path_factory.mktemp("nothing")
    app = build_app(
        model_path=model_path,
        threads=1,
        metrics_path=missing / "metrics.json",
        lock_path=missing / "dvc.lock",
    )
    with TestClient(app) as client:
        yield client


def seven_png(size: int = 200, mode: str = "RGB") -> bytes:
    """A dark '7' on light paper, as a phone photo or a drawing would be."""
    image = Image.new(mode, (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(50, 40), (150, 40), (90, 170)], fill="black", width=14)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "seven.png") -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "image/png")})


def assert_one_line_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert "\n" not in detail
    assert "Traceback" not in detail
    for word in words:
        assert word in detail, detail


def test_json_pixels_give_the_same_probabilities_as_predict(client, model_path):
    digit = synthetic_digits(10, seed=3).images[7]  # (1, 28, 28)
    response = client.post("/predict", json={"pixels": digit.ravel().tolist()})
    assert response.status_code == 200, response.text
    answer = Prediction.model_validate(response.json())
    model, _ = load_model(model_path)
    expected = class_probabilities(model, digit[None])[0]
    np.testing.assert_allclose(answer.probabilities, expected, atol=1e-6)
    assert answer.predicted == int(expected.argmax())
    assert answer.confidence == pytest.approx(float(expected.max()))
    assert answer.pixels == digit.ravel().tolist()  # JSON pixels are used as they are


def test_upload_is_preprocessed_as_predict_reads_image_files(client, model_path, tmp_path):
    data = seven_png()
    (tmp_path / "seven.png").write_bytes(data)
    seen_by_predict = read_image(tmp_path / "seven.png")  # (28, 28) uint8
    response = upload(client, data)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["pixels"] == seen_by_predict.ravel().tolist()
    model, _ = load_model(model_path)
    expected = class_probabilities(model, seen_by_predict[None, None])[0]
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_transparent_png_counts_as_paper(client):
    response = upload(client, seven_png(mode="RGBA"))
    assert response.status_code == 200, response.text
    assert max(response.json()["pixels"]) == 255


def _blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (50, 50), 255).save(buffer, format="PNG")
    return buffer.getvalue()


def _huge_png() -> bytes:
    buffer = io.BytesIO()  # 8000x7000 of one colour: a few KB on the wire, 56 MP decoded
    Image.new("1", (8000, 7000), 1).save(buffer, format="PNG")
    return buffer.getvalue()


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (20, 20), 0).save(buffer, format="GIF")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"not an image at all", 400, ["seven.png", "not a PNG, JPEG or BMP image"]),
        (seven_png()[:200], 400, ["seven.png", "unreadable"]),
        (_gif(), 400, ["not a PNG, JPEG or BMP image"]),
        (_blank_png(), 400, ["no digit found"]),
        (_huge_png(), 413, ["8000 x 7000", f"at most {MAX_IMAGE_PIXELS}"]),
        (b"", 400, ["seven.png"]),
    ],
    ids=["text", "truncated-png", "gif", "blank", "too-many-pixels", "empty"],
)
def test_bad_uploads_get_a_one_line_4xx(client, data, status, words):
    assert_one_line_error(upload(client, data), status, *words)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"pixels": [0] * 783}, ["pixels", "784"]),
        ({"pixels": [0] * 785}, ["pixels", "784"]),
        ({"pixels": [256] + [0] * 783}, ["pixels.0", "255", "256"]),
        ({"pixels": [-1] + [0] * 783}, ["pixels.0", "-1"]),
        ({"pixels": [0.5] + [0] * 783}, ["pixels.0", "0.5"]),
        ({"pixels": ["7"] + [0] * 783}, ["pixels.0", "'7'"]),
        ({"pixels": [True] + [0] * 783}, ["pixels.0"]),
        ({"pixels": [0] * 784, "label": 3}, ["label"]),
        ({"image": [0] * 784}, ["pixels", "required"]),
        ([0] * 784, ['{"pixels": [784 integers 0-255, row by row]}']),
    ],
    ids=[
        "short",
        "long",
        "over-255",
        "negative",
        "float",
        "string",
        "bool",
        "extra",
        "no-key",
        "list",
    ],
)
def test_bad_json_gets_a_one_line_422(client, body, words):
    assert_one_line_error(client.post("/predict", json=body), 422, *words)


def test_malformed_json_and_wrong_types_are_4xx(client):
    bad_json = client.post(
        "/predict", content=b'{"pixels": [1, 2', headers={"content-type": "application/json"}
    )
    assert_one_line_error(bad_json, 422, "JSON")
    assert_one_line_error(client.post("/predict", content=b"1,2,3"), 415, "multipart/form-data")
    text = client.post("/predict", content=b"x", headers={"content-type": "text/plain"})
    assert_one_line_error(text, 415, "text/plain")
    no_file = client.post("/predict", data={"image": "x"}, files={"other": ("a.png", b"x")})
    assert_one_line_error(no_file, 400, "field 'file'")
    two_files = client.post(
        "/predict", files=[("file", ("a.png", seven_png())), ("file", ("b.png", seven_png()))]
    )
    assert_one_line_error(two_files, 400, "multipart")
    broken = client.post(
        "/predict",
        content=b"--xyz\r\nnonsense",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert_one_line_error(broken, 400, "multipart")
    assert client.get("/predict").status_code == 405


def test_bodies_over_the_limit_are_refused_before_parsing(client):
    big_json = json.dumps({"pixels": [0] * 784}).encode() + b" " * MAX_JSON_BYTES
    response = client.post(
        "/predict", content=big_json, headers={"content-type": "application/json"}
    )
    assert_one_line_error(response, 413, "JSON body", f"{MAX_JSON_BYTES:,}")
    big_file = seven_png() + b"\0" * MAX_UPLOAD_BYTES
    assert_one_line_error(upload(client, big_file), 413, "upload", f"{MAX_UPLOAD_BYTES:,}")

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(MAX_JSON_BYTES // 1024 + 2):
            yield b" " * 1024

    streamed = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_one_line_error(streamed, 413, "JSON body")


def test_health_and_model_info(client):
    assert client.get("/health").json() == {"status": "ok", "arch": "mlp"}
    info = client.get("/model").json()
    assert info["file"] == "model.safetensors"  # the name only: no path of this machine
    assert info["arch"] == "mlp"
    assert info["hidden"] == [16]
    assert info["parameters"] == 784 * 16 + 16 + 16 * 10 + 10
    assert info["trained_with"] is None  # no dvc.lock
    assert info["test_accuracy"] is None  # no metrics.json
    assert info["metrics_match_model"] is False


def _lock_for(model_path: Path, metrics_path: Path, params: dict) -> dict:
    def entry(path: Path) -> dict:  # paths as dvc.lock has them: from the project root
        relative = path.relative_to(model_path.parents[1]).as_posix()
        return {"path": relative, "md5": hashlib.md5(path.read_bytes()).hexdigest()}

    predictions = {"path": "data/predictions.csv", "md5": "abc"}
    return {
        "stages": {
            "train": {"params": {"params.yaml": params}, "outs": [entry(model_path)]},
            "predict": {"deps": [entry(model_path)], "outs": [predictions]},
            "evaluate": {"deps": [predictions], "outs": [entry(metrics_path)]},
        }
    }


def test_model_info_trusts_dvc_lock_only_for_the_same_file(model_path, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "metrics").mkdir()
    model_file = project / "data" / "model.safetensors"
    model_file.write_bytes(model_path.read_bytes())
    metrics = project / "metrics" / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.9123}))
    lock = project / "dvc.lock"
    params = {"model": {"arch": "mlp"}, "runtime.threads": 1}
    lock.write_text(yaml.safe_dump(_lock_for(model_file, metrics, params)))
    model, config = load_model(model_file)

    def describe():
        return describe_model(
            model, config, model_path=model_file, metrics_path=metrics, lock_path=lock
        )

    info = describe()
    assert info.trained_with == params
    assert info.test_accuracy == pytest.approx(0.9123)
    assert info.metrics_match_model is True

    metrics.write_text(json.dumps({"accuracy": 0.5}))  # rewritten since dvc.lock
    info = describe()
    assert (info.test_accuracy, info.metrics_match_model) == (0.5, False)
    assert info.trained_with == params

    model_file.write_bytes(model_path.read_bytes() + b" ")  # another file than dvc.lock's
    assert describe().trained_with is None

    lock.write_text(": not yaml : [")
    assert describe().trained_with is None


def test_page_is_served_and_loads_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "<canvas" in page.text
    assert 'src="app.js"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/{name}").status_code == 200
    for path in PAGE_FILES:
        text = path.read_text()
        assert not re.search(r"https?://", text), path.name
    assert sum(path.stat().st_size for path in PAGE_FILES) < 30_000  # small
    assert client.get("/docs").status_code == 404  # FastAPI's docs page needs a CDN
    assert "/predict" in client.get("/openapi.json").json()["paths"]


class _Probe(nn.Module):
    """A stand-in network that records how it is called, and can be slow."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.calls: list[tuple[int, bool]] = []
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.get_num_threads(), self.training))
        time.sleep(self.delay)
        return torch.log_softmax(self.dropout(torch.ones(len(x), 10)), dim=1)


def test_inference_runs_in_eval_mode_on_the_configured_threads():
    probe = _Probe()
    probe.train()
    predictor = Predictor(probe, threads=3)
    try:
        digit = np.zeros((28, 28), dtype=np.uint8)
        first = asyncio.run(predictor.predict(digit))
        second = asyncio.run(predictor.predict(digit))
    finally:
        predictor.close()
    assert probe.calls == [(3, False), (3, False)]
    np.testing.assert_array_equal(first, second)  # dropout off: the same answer
    np.testing.assert_allclose(first, np.full(10, 0.1), rtol=1e-6)


def test_slow_inference_does_not_block_other_requests(model_path):
    _, config = load_model(model_path)
    probe = _Probe(delay=0.4)
    info = describe_model(
        probe, config, model_path=model_path, metrics_path=Path("-"), lock_path=Path("-")
    )
    app = create_app(Predictor(probe, threads=1), info)
    body = {"pixels": [0] * 784}

    async def scenario() -> tuple[float, float, list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            start = time.perf_counter()
            predictions = [asyncio.create_task(http.post("/predict", json=body)) for _ in range(3)]
            await asyncio.sleep(0.05)  # the predictions are in flight
            health = await http.get("/health")
            health_seconds = time.perf_counter() - start
            answers = await asyncio.gather(*predictions)
            return (
                health_seconds,
                time.perf_counter() - start,
                [
                    health.status_code,
                    *[answer.status_code for answer in answers],
                ],
            )

    health_seconds, all_seconds, statuses = asyncio.run(scenario())
    assert statuses == [200, 200, 200, 200]
    assert all_seconds >= 3 * 0.4  # one inference worker: they ran one after another...
    assert health_seconds < 0.4  # ...while the event loop answered /health at once


def test_help_imports_neither_torch_nor_fastapi():
    code = (
        "import sys; from typer.testing import CliRunner; from mnist_pipeline.cli.app import app; "
        "result = CliRunner().invoke(app, ['--help']); assert result.exit_code == 0; "
        "print(sorted(m for m in ('torch', 'fastapi', 'uvicorn', 'onnx') if m in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"


def test_serve_with_a_missing_model_fails_with_one_line(tmp_path, monkeypatch, repo_params):
    from typer.testing import CliRunner

    from mnist_pipeline.cli.app import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params))
    result = CliRunner().invoke(app, ["serve", "--model", "missing.safetensors"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: missing.safetensors: no such model file; run `dvc repro train` first"
    ]
