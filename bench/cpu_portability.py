"""Do the trained bytes depend on which CPU kernels run? Train under several kernel choices.

    python bench/cpu_portability.py [--data data/prepared/train.safetensors] [--epochs 50]

Each variant runs in a fresh process (the libraries read their settings when they first
run a kernel) with other environment variables: the pipeline's pins (mnist_pipeline/core/kernels.py)
on or off, and caps that make this CPU behave like one without AVX-512. Each trains the
tutorial's MLP (full batch, dropout 0.2) with the fused Adam the pipeline uses and with
torch's default for-each Adam, and a small CNN (conv3x3-BN-ReLU-maxpool x2, channels-last,
batches of 100), with the pipeline's seed and thread count, and prints a hash of the
weights; and counts how many of 300,000 torch.sqrt results differ from IEEE sqrt.
Variants that print the same hashes used kernels that round alike. Run it on two
machines and compare the `pinned` rows: equal hashes there mean equal bytes on both.

Needs only torch, numpy and safetensors (not the pipeline's other dependencies), so it
runs on a bare machine with torch installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
# name -> environment changes; "native" opts out of the pipeline's pins.
VARIANTS: dict[str, dict[str, str]] = {
    "native": {"MNIST_PIPELINE_NATIVE_KERNELS": "1"},
    "native, AVX2 caps": {"MNIST_PIPELINE_NATIVE_KERNELS": "1", **AVX2_CAPS},
    "pinned": {},
    "pinned, AVX2 caps": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "pinned, MKL not STRICT": {"MKL_CBWR": "AVX2"},
    "pinned, 1 OpenMP thread env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
}


def child(data: Path, epochs: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import hashlib
    import itertools

    from mnist_pipeline.core.kernels import pin_portable_kernels

    pinned = pin_portable_kernels()  # as the entry points do, unless opted out

    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812
    from safetensors.numpy import load_file
    from torch import nn

    tensors = load_file(str(data))
    images = (torch.from_numpy(tensors["images"]).float() / 255 - 0.1307) / 0.3081
    labels = torch.from_numpy(tensors["labels"]).long()

    def digest(model: nn.Module) -> str:
        sha = hashlib.sha256()
        for value in model.state_dict().values():
            sha.update(value.contiguous().numpy().tobytes())
        return sha.hexdigest()[:16]

    def mlp() -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        for n_in, n_out in itertools.pairwise([784, 392, 196, 98]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(0.2)]
        return nn.Sequential(*layers, nn.Linear(98, 10), nn.LogSoftmax(dim=1))

    def cnn() -> nn.Module:
        blocks: list[nn.Module] = []
        for c_in, c_out in ((1, 8), (8, 16)):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out)]
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
        head = [nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Dropout(0.2)]
        return nn.Sequential(*blocks, *head, nn.Linear(64, 10), nn.LogSoftmax(dim=1))

    def train(build, epochs: int, batch: int | None, fused: bool) -> str:
        torch.manual_seed(42)
        torch.set_num_threads(2)
        memory_format = torch.channels_last if build is cnn else torch.contiguous_format
        model = build().to(memory_format=memory_format)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.001, fused=fused)
        order = torch.Generator().manual_seed(42)
        model.train()
        for _ in range(epochs):
            for indices in torch.randperm(len(labels), generator=order).split(batch or 10**9):
                optimizer.zero_grad()
                x = images[indices].contiguous(memory_format=memory_format)
                F.nll_loss(model(x), labels[indices]).backward()
                optimizer.step()
        return digest(model)

    # torch.sqrt goes to MKL's vector math: how many results differ from IEEE sqrt?
    unit = np.abs(np.random.RandomState(0).standard_normal(300_000).astype(np.float32))
    inexact = int((torch.from_numpy(unit).sqrt().numpy() != np.sqrt(unit)).sum())
    started = time.perf_counter()
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "pinned": pinned,
        "mlp": train(mlp, epochs, None, fused=True),
        "mlp for-each Adam": train(mlp, epochs, None, fused=False),
        "cnn": train(cnn, 2, 100, fused=True),
        "torch.sqrt inexact": inexact,
        "seconds": round(time.perf_counter() - started, 1),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared/train.safetensors")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.epochs)))
        return
    import torch

    print(f"# {cpu_name()}; torch {torch.__version__}; {os.cpu_count()} CPUs")
    base = {k: v for k, v in os.environ.items() if k not in {*AVX2_CAPS, "MKL_CBWR"}}
    base.pop("MNIST_PIPELINE_NATIVE_KERNELS", None)
    for name, changes in VARIANTS.items():
        command = [sys.executable, __file__, "--child", "--data", str(args.data)]
        command += ["--epochs", str(args.epochs)]
        done = subprocess.run(
            command, env={**base, **changes}, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr}", file=sys.stderr)
            continue
        print(json.dumps({"variant": name, **json.loads(done.stdout)}), flush=True)


if __name__ == "__main__":
    main()
