"""Probes for bench/gpu_checks.py: what a training run computes in, TF32 switches, flags."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def flag(read) -> Any:
    """A setting or version, or why it could not be read (e.g. torch's TF32 APIs change)."""
    try:
        return read()
    except Exception as err:
        return f"unreadable ({type(err).__name__})"


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


class DtypeProbe:
    """Records, inside train_model, the dtypes that the layers compute in and the loss has."""

    def __init__(self) -> None:
        self.compute: set[str] = set()
        self.loss: set[str] = set()

    @contextlib.contextmanager
    def watching(self) -> Iterator[DtypeProbe]:
        import torch

        import mnist_pipeline.training.loop as loop

        real_build, real_loss = loop.build_model, loop.classification_loss

        def on_output(module, inputs, output) -> None:
            if module.training and torch.is_grad_enabled():
                self.compute.add(str(output.dtype).removeprefix("torch."))

        def build(config):
            model = real_build(config)
            for module in model.modules():
                if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                    module.register_forward_hook(on_output)
            return model

        def loss(*args, **kwargs):
            value = real_loss(*args, **kwargs)
            self.loss.add(str(value.dtype).removeprefix("torch."))
            return value

        loop.build_model, loop.classification_loss = build, loss
        try:
            yield self
        finally:
            loop.build_model, loop.classification_loss = real_build, real_loss


@contextlib.contextmanager
def exact_fp32(on_cuda: bool) -> Iterator[None]:
    import torch

    if not on_cuda:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextlib.contextmanager
def temporary_file(content: bytes) -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        path.write_bytes(content)
        yield path
