"""Device and precision: auto falls back to the CPU, cuda without a GPU is a clear error,
bf16 autocast is CUDA-only, and LOCAL_RANK beyond the GPUs is a clear error. The CUDA
paths themselves are checked by tests/test_gpu.py."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.model.model_file import load_model
from mnist_pipeline.training.loop import train_model
from mnist_pipeline.training.runtime import (
    CUBLAS_DETERMINISTIC_WORKSPACE,
    autocast,
    resolve_device,
    uses_bf16,
)
from tests.conftest import RECIPE, synthetic_digits, write_params

CPU = torch.device("cpu")
TINY_CNN = ModelParams(arch="cnn", hidden=[16], dropout=0.1, channels=[4, 8])


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_native_bf16(monkeypatch):
    """A CPU without native bf16, where bf16 autocast is not used (see cpu_bf16.py)."""
    import mnist_pipeline.training.runtime

    monkeypatch.setattr(mnist_pipeline.training.runtime, "native_bf16", lambda: False)


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch.cuda says there are 2 GPUs; nothing may actually run on them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)


def test_auto_falls_back_to_the_cpu(no_gpu):
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU


def test_auto_picks_the_gpu_of_this_local_rank(fake_gpu):
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    # Set before CUDA starts, for deterministic cuBLAS sums.
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC_WORKSPACE
    assert resolve_device("cpu") == CPU


def test_local_rank_beyond_the_gpus_is_a_one_line_error(fake_gpu):
    with pytest.raises(PipelineError, match="LOCAL_RANK is 2, but torch sees 2 CUDA GPU"):
        resolve_device("auto", local_rank=2)
    assert resolve_device("cpu", local_rank=2) == CPU  # CPU ranks need no GPU


def test_torchrun_with_more_processes_than_gpus_fails_cleanly(
    fake_gpu, tmp_path, monkeypatch, tiny_params
):
    """As torchrun would start the third process on a machine with 2 GPUs."""
    env = {"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "3"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = _train_command(tmp_path, monkeypatch, tiny_params, device="auto")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: torchrun: LOCAL_RANK is 2, but torch sees 2 CUDA GPU(s) on this machine; "
        "expected --nproc-per-node at most 2 (or train.device cpu)\n"
    )


def test_bf16_only_on_cuda(no_gpu, no_native_bf16, capsys):
    assert uses_bf16("bf16", "cuda", torch.device("cuda", 0)) is True
    assert uses_bf16("fp32", "cuda", torch.device("cuda", 0)) is False
    with pytest.raises(
        PipelineError, match="train.precision is bf16, but train.device is cpu and this CPU"
    ):
        uses_bf16("bf16", "cpu", CPU)
    assert uses_bf16("bf16", "auto", CPU) is False  # the same params still train, in fp32
    assert "training in fp32" in capsys.readouterr().err


def _train_command(tmp_path, monkeypatch, tiny_params, **train):
    monkeypatch.chdir(tmp_path)
    tiny_params["train"].update(train)
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    return CliRunner().invoke(app, ["train", "--train-data", "train.safetensors"])


def test_train_with_auto_on_a_cpu_machine(
    no_gpu, no_native_bf16, tmp_path, monkeypatch, tiny_params
):
    result = _train_command(tmp_path, monkeypatch, tiny_params, device="auto", precision="bf16")
    assert result.exit_code == 0, result.output
    assert "training in fp32" in result.stderr
    model, _ = load_model(tmp_path / "data/model.safetensors")  # the tutorial's mlp
    assert all(weight.dtype == torch.float32 for weight in model.state_dict().values())


def test_cuda_without_a_gpu_is_a_one_line_error(no_gpu, tmp_path, monkeypatch, tiny_params):
    result = _train_command(tmp_path, monkeypatch, tiny_params, device="cuda")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: params.yaml: train.device is cuda, but torch sees")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "data/model.safetensors").exists()


def test_the_bf16_autocast_path_trains():
    """CUDA's bf16 code path, run on the CPU (where torch.autocast also has bf16)."""
    settings = TrainParams.model_validate(RECIPE | {"epochs": 4, "lr": 0.01, "batch_size": 20})
    model, _, history = train_model(synthetic_digits(60), TINY_CNN, settings, 1, bf16=True)
    assert history[-1].train_loss < history[0].train_loss
    floats = [weight for weight in model.state_dict().values() if weight.is_floating_point()]
    assert all(weight.dtype == torch.float32 for weight in floats)  # autocast keeps fp32
    assert all(weight.device == CPU for weight in model.state_dict().values())
    with autocast(CPU, bf16=True)():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
