"""Property-based: random bytes, truncations and byte flips of valid files, fed to every reader.

Each must end in a result or one PipelineError line, never another exception (a
traceback), a hang (hypothesis' deadline) or a memory spike (the process's peak RSS).
"""

from __future__ import annotations

import gzip
import io
import os
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams, load_params
from mnist_pipeline.core.predictions import read_predictions
from mnist_pipeline.formats import read_digits
from mnist_pipeline.formats.csv_digits import write_csv_digits
from mnist_pipeline.formats.idx import write_idx
from mnist_pipeline.formats.images import read_image_bytes
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.training.checkpoint import _decode
from tests.conftest import REPO_ROOT, synthetic_digits
from tests.hostile_files import predictions_with

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=10_000,  # ms per example: generous on a loaded machine, but catches a hang
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_GROWTH_MB = 500


def _valid_files(folder: Path) -> dict[str, bytes]:
    """One small valid file of every format the readers accept, by name."""
    digits = synthetic_digits(3)
    write_csv_digits(folder / "v.csv", digits)
    write_idx(folder / "v-images-idx3-ubyte", digits.images.reshape(-1, 28, 28))
    write_idx(folder / "v-images-idx3-ubyte.gz", digits.images.reshape(-1, 28, 28), True)
    save_prepared(folder / "v.safetensors", digits)
    files = {name: (folder / name).read_bytes() for name in [
        "v.csv", "v-images-idx3-ubyte", "v-images-idx3-ubyte.gz", "v.safetensors"]}  # fmt: skip
    picture = Image.fromarray(255 - digits.images[0, 0]).resize((40, 56))
    for kind in ("PNG", "JPEG", "BMP"):
        buffer = io.BytesIO()
        picture.save(buffer, kind)
        files[f"v.{kind.lower()}"] = buffer.getvalue()
    return files


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, bytes]:
    return _valid_files(tmp_path_factory.mktemp("valid"))


def _mutated(data: st.DataObject, original: bytes) -> bytes:
    """A truncation, a few flipped bytes, or both, of `original`."""
    content = bytearray(original)
    if data.draw(st.booleans(), label="truncate"):
        content = content[: data.draw(st.integers(0, len(content)), label="length")]
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if content:
            position = data.draw(st.integers(0, len(content) - 1), label="position")
            content[position] = data.draw(st.integers(0, 255), label="byte")
    return bytes(content)


def _ends_cleanly(call) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = ""
    try:
        call()
    except PipelineError as err:
        message = str(err)
    assert "\n" not in message
    assert len(message) < 1000
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert growth_mb < MAX_GROWTH_MB


NAMES = ["v.csv", "v-images-idx3-ubyte", "v-images-idx3-ubyte.gz", "v.safetensors",
         "v.png", "v.jpeg", "v.bmp"]  # fmt: skip


@FUZZ
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_read_digits_on_damaged_files(tmp_path, valid_files, data, name):
    path = tmp_path / name
    path.write_bytes(_mutated(data, valid_files[name]))
    _ends_cleanly(lambda: read_digits(path))
    _ends_cleanly(lambda: read_digits(path, require_labels=True))


@FUZZ
@given(content=st.binary(max_size=4096), name=st.sampled_from(NAMES))
def test_read_digits_on_random_bytes(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    _ends_cleanly(lambda: read_digits(path))


@FUZZ
@given(data=st.data(), name=st.sampled_from(["v.png", "v.jpeg", "v.bmp"]))
def test_image_bytes_reader_on_damaged_images(valid_files, data, name):
    content = _mutated(data, valid_files[name])
    _ends_cleanly(lambda: read_image_bytes(content, "upload"))


@FUZZ
@given(content=st.binary(max_size=2048))
def test_idx_gzip_of_random_content(tmp_path, content):
    path = tmp_path / "r-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + content))
    _ends_cleanly(lambda: read_digits(path))


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    config = ModelParams(arch="cnn", hidden=[8], dropout=0.1, channels=[2, 4])
    save_model(build_model(config), config, path)
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_load_model_on_damaged_model_files(tmp_path, model_bytes, data):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_mutated(data, model_bytes))
    _ends_cleanly(lambda: load_model(path))


@FUZZ
@given(data=st.data())
def test_load_params_on_damaged_params(tmp_path, data):
    path = tmp_path / "params.yaml"
    path.write_bytes(_mutated(data, (REPO_ROOT / "params.yaml").read_bytes()))
    _ends_cleanly(lambda: load_params(path))


@FUZZ
@given(text=st.text(max_size=400))
def test_load_params_on_random_text(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    _ends_cleanly(lambda: load_params(path))


@FUZZ
@given(data=st.data())
def test_read_predictions_on_damaged_tables(tmp_path, data):
    original = predictions_with(tmp_path, "0.0").read_bytes()
    path = tmp_path / "damaged.csv"
    path.write_bytes(_mutated(data, original))
    _ends_cleanly(lambda: read_predictions(path))


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"format": 1, "epoch": 1, "model": {"w": torch.zeros(3)}, "history": []}, buffer)
    return buffer.getvalue()


@FUZZ
@given(data=st.data())
def test_checkpoint_decoding_of_damaged_bytes(checkpoint_bytes, data):
    checkpoint, problem = _decode(_mutated(data, checkpoint_bytes))
    assert (checkpoint is None) != (problem is None)
    assert problem is None or "\n" not in problem


def test_fuzz_inputs_are_valid_before_damage(valid_files, tmp_path):
    """The seeds are real files the readers accept: damage, not the seed, is what is tested."""
    for name in NAMES:
        (tmp_path / name).write_bytes(valid_files[name])
        assert len(read_digits(tmp_path / name).images) >= 1
    assert np.isfinite(read_predictions(predictions_with(tmp_path, "0.0"))["prob_3"]).all()
