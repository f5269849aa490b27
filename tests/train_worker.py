"""One training process for tests/test_gpu.py: `python -m tests.train_worker SPEC.json`.

It runs the train stage's own `run()` (without a DVCLive folder: the GPU machine has no
dvclive) and writes how DDP was set up to SPEC's `seen` file, per rank. The CLI cannot be
used: it has no option for gloo on CUDA, which two ranks on one GPU need (nccl refuses).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mnist_pipeline.core.kernels import pin_portable_kernels


def main(spec_path: str) -> None:
    pin_portable_kernels()  # as the entry points do, before torch loads
    import torch
    import torch.distributed as dist

    import mnist_pipeline.training.loop as loop
    from mnist_pipeline.core.params import load_params
    from mnist_pipeline.training import run as stage

    spec = json.loads(Path(spec_path).read_text())
    params = load_params(Path(spec["params"]))
    rank = int(os.environ.get("RANK", "0"))
    seen: dict = {}
    real_wrap = loop.wrap_model

    def wrap(model, cluster):
        wrapped = real_wrap(model, cluster)
        ddp = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        seen.update(
            backend=dist.get_backend() if dist.is_initialized() else None,
            world_size=cluster.world_size,
            ddp=ddp,
            device_ids=list(wrapped.device_ids or []) if ddp else None,
            broadcast_buffers=wrapped.broadcast_buffers if ddp else None,
            sync_batchnorm=sum(isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.modules()),
        )
        return wrapped

    loop.wrap_model = wrap

    def report(stats) -> None:  # the line a kill waits for comes after the checkpoint
        if rank == 0:
            print(f"Epoch [{stats.epoch}/{stats.epochs}]", file=sys.stderr, flush=True)

    checkpoint_dir = spec.get("checkpoint_dir")
    stage.run(
        train_path=Path(spec["train"]),
        model_path=Path(spec["model"]),
        live_dir=None,
        model_params=params.model,
        train_params=params.train,
        threads=params.runtime.threads,
        report=report,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
        backend=spec.get("backend"),
    )
    Path(f"{spec['seen']}.rank{rank}").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1])
