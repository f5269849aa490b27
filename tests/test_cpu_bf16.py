"""bf16 is "native" only where the CPU has it and the user's environment lets oneDNN use it:
a user's ONEDNN_MAX_CPU_ISA=AVX2 (bench/reference_cpu.sh) turns it off, the project's own
AVX2 pin doesn't (a bf16 run removes that pin before torch loads)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core import kernels
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.training import cpu_bf16, runtime
from tests.conftest import synthetic_digits, write_params

CAP = cpu_bf16.ONEDNN_CAP_VARIABLE
CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that lists avx512_bf16, in a process whose pins haven't been set yet."""
    monkeypatch.setattr(cpu_bf16, "cpu_lists_native_bf16", lambda: True)
    monkeypatch.setattr(kernels._PinState, "set_here", [])
    monkeypatch.setattr(kernels._PinState, "in_force", False)
    monkeypatch.delenv(kernels.NATIVE_KERNELS_VARIABLE, raising=False)
    for name in kernels.PORTABLE_KERNELS:
        monkeypatch.delenv(name, raising=False)


def test_which_onednn_caps_exclude_bf16():
    for cap in [
        "SSE41",
        "AVX2",
        "avx2",
        "AVX2_VNNI",
        "AVX2_VNNI_2",
        "AVX512_CORE",
        "AVX512_CORE_VNNI",
    ]:
        assert cpu_bf16.isa_cap_excludes_bf16(cap), cap
    for cap in ["", "ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX10_1_512"]:
        assert not cpu_bf16.isa_cap_excludes_bf16(cap), cap


def test_the_users_avx2_cap_turns_native_bf16_off(bf16_cpu, monkeypatch):
    assert cpu_bf16.native_bf16()
    monkeypatch.setenv(CAP, "AVX2")  # as bench/reference_cpu.sh sets it
    assert not cpu_bf16.native_bf16()
    kernels.pin_portable_kernels()  # leaves the user's value, so it stays the user's
    kernels.use_native_kernels()  # what `train` does for bf16: removes only its own pins
    assert not cpu_bf16.native_bf16()
    monkeypatch.setenv(CAP, "AVX512_CORE_BF16")
    assert cpu_bf16.native_bf16()


def test_the_projects_own_pin_does_not_turn_it_off(bf16_cpu):
    kernels.pin_portable_kernels()
    assert kernels.set_by_pins(CAP)
    assert cpu_bf16.native_bf16()  # a bf16 run removes this pin before torch loads
    kernels.use_native_kernels()
    assert not kernels.set_by_pins(CAP)
    assert cpu_bf16.native_bf16()
    assert runtime.uses_bf16("bf16", "cpu", CPU)


def test_train_refuses_bf16_on_cpu_under_the_users_cap(
    bf16_cpu, tmp_path, monkeypatch, tiny_params
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(CAP, "AVX2")
    kernels.pin_portable_kernels()  # as `mnist-pipeline` does first thing
    monkeypatch.chdir(tmp_path)
    tiny_params["train"].update(device="cpu", precision="bf16")
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    result = CliRunner().invoke(app, ["train", "--train-data", "train.safetensors"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: params.yaml: train.precision is bf16, but")
    assert "(ONEDNN_MAX_CPU_ISA=AVX2 in the environment)" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "data/model.safetensors").exists()
