"""`mnist-pipeline export --format onnx`: the model as an ONNX graph that takes raw pixels.

Works for any network with the model file's contract (standardised float (B, 1, 28, 28)
in, (B, 10) log-probabilities out): the mlp, the cnn, or an ensemble module. The graph
also holds what the pipeline does around the network, so a caller without PyTorch feeds
uint8 pixels 0-255 and reads probabilities:

    pixels uint8 (B, 1, 28, 28) -> /255, standardise -> network -> exp -> probabilities (B, 10)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.digits import IMAGE_SIDE
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.model.networks import scale_pixels

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
# 17 is read by every onnxruntime since 1.14 (2023) and by most other runtimes.
OPSET = 17


class RawPixelsClassifier(nn.Module):
    """uint8 (B, 1, 28, 28) in 0-255 -> float32 (B, 10) probabilities, dropout off."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(scale_pixels(pixels)), dim=1)  # as `predict` does


def export_onnx(network: nn.Module, path: Path) -> None:
    """Write `network`, wrapped in the pixel scaling, as ONNX with a dynamic batch size.

    Uses the TorchScript exporter (dynamo=False): for these small feed-forward networks it
    gives the same graph without needing onnxscript, several times faster (docs/serving.md).
    """
    wrapped = RawPixelsClassifier(network).eval()
    example = torch.zeros(2, 1, IMAGE_SIDE, IMAGE_SIDE, dtype=torch.uint8)  # (B, 1, 28, 28)
    batch = {0: "batch"}
    with atomic_output(path) as tmp, torch.inference_mode():
        torch.onnx.export(
            wrapped,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: batch, OUTPUT_NAME: batch},
            opset_version=OPSET,
            dynamo=False,
        )
        _check(tmp)  # before it replaces an earlier export


def run(model_path: Path, output_path: Path) -> int:
    """Export the model file at `model_path` to `output_path`; return the file's size."""
    _require_onnx()
    from mnist_pipeline.model.model_file import load_model

    network, _ = load_model(model_path)
    export_onnx(network, output_path)
    return output_path.stat().st_size


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401 (the exporter needs it; say so before any work)
    except ImportError:
        raise PipelineError(
            "export --format onnx needs the `onnx` package; install it with "
            "pip install -e '.[onnx]'"
        ) from None


def _check(path: Path) -> None:
    """The written file is a valid ONNX model with the promised input and output."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):  # a bug, not a user error
        raise RuntimeError(f"{path}: exported graph has inputs/outputs {names}")
