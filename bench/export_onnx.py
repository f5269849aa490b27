"""Time torch.onnx.export's two exporters on the pipeline's networks, and check parity.

    python bench/export_onnx.py

TorchScript (dynamo=False) against torch.export (dynamo=True, needs onnxscript), on the
default mlp and the `best` recipe's cnn, untrained (export time does not depend on the
weights). Prints one Markdown row per network and exporter: wall time of the export call
in a warm process, the file size, and the largest probability difference from torch on
256 random images.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.serving.onnx_export import INPUT_NAME, OPSET, OUTPUT_NAME, RawPixelsClassifier

NETWORKS = {
    "mlp 392-196-98 (default)": ModelParams(
        arch="mlp", hidden=[392, 196, 98], dropout=0.2, channels=[]
    ),
    "cnn 32-64-128, 128 (best)": ModelParams(
        arch="cnn", hidden=[128], dropout=0.3, channels=[32, 64, 128]
    ),
}


def export(network: torch.nn.Module, path: Path, *, dynamo: bool) -> float:
    wrapped = RawPixelsClassifier(network).eval()
    example = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    options = (
        {"dynamic_shapes": ({0: torch.export.Dim("batch")},), "external_data": False}
        if dynamo
        else {"dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}}
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET if not dynamo else 18,
            dynamo=dynamo,
            **options,
        )
    return time.perf_counter() - start


def max_difference(network: torch.nn.Module, path: Path) -> float:
    import onnxruntime

    images = np.random.default_rng(0).integers(0, 256, (256, 1, 28, 28), dtype=np.uint8)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_probabilities,) = session.run(None, {INPUT_NAME: images})
    with torch.inference_mode():
        torch_probabilities = RawPixelsClassifier(network)(torch.from_numpy(images)).numpy()
    return float(np.abs(onnx_probabilities - torch_probabilities).max())


def main() -> None:
    torch.manual_seed(0)
    print("| network | exporter | export (s) | file (KB) | max prob. difference |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for name, config in NETWORKS.items():
            network = build_model(config).eval()
            for dynamo in (False, True, False):  # TorchScript twice: the first pays imports
                path = Path(folder) / f"model-{dynamo}.onnx"
                try:
                    seconds = export(network, path, dynamo=dynamo)
                except Exception as err:  # e.g. onnxscript missing: report, go on
                    print(f"| {name} | dynamo={dynamo} | failed: {type(err).__name__} | | |")
                    continue
                size = path.stat().st_size / 1024
                difference = max_difference(network, path)
                label = "torch.export (dynamo=True)" if dynamo else "TorchScript (dynamo=False)"
                print(f"| {name} | {label} | {seconds:.2f} | {size:.0f} | {difference:.1e} |")


if __name__ == "__main__":
    main()
