"""Data-parallel training with PyTorch's own machinery: torchrun and DistributedDataParallel.

`torchrun --nproc-per-node=N -m mnist_pipeline train` starts N copies of the command and tells
each one its place in environment variables (WORLD_SIZE, RANK, LOCAL_RANK,
LOCAL_WORLD_SIZE). Without them the command runs as the one process of a world of one,
and every helper here does nothing, so single-process training is unchanged.

Every rank walks the same global batches (same seed, same order) and trains on its slice
of each one; DDP averages the gradients. Rank 0 alone validates, logs and writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from mnist_pipeline.training.runtime import resolve_device


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training processes (a world of one by default)."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine, which share its CPU cores
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, n_images: int) -> slice:
        """This rank's contiguous slice of a global batch of n_images.

        tensor_split's rule: the first n_images % world_size ranks get one image more.
        """
        share, extra = divmod(n_images, self.world_size)
        start = self.rank * share + min(self.rank, extra)
        return slice(start, start + share + (self.rank < extra))

    def threads(self, threads: int) -> int:
        """CPU threads per process: runtime.threads is shared by this machine's processes."""
        return max(1, threads // self.local_world_size)


SINGLE_PROCESS = Cluster()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank_from_env() -> int:
    """This process's rank (0 without torchrun); needs no torch, for the CLI."""
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def session(requested_device: str, *, backend: str | None = None) -> Iterator[Cluster]:
    """The cluster that torchrun describes (or a world of one), with its process group.

    gloo connects CPU processes, nccl GPU ones. `backend="gloo"` on CUDA lets several
    processes share one GPU (nccl refuses that), which is how tests/test_gpu.py runs
    DDP on a one-GPU machine. The group is destroyed on the way out, also when training
    fails, so that no process is left waiting.
    """
    if not launched_by_torchrun():
        yield Cluster(device=resolve_device(requested_device))
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    cluster = Cluster(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        device=device,
    )
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "nccl":
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group(backend)
    try:
        yield cluster
    finally:
        dist.destroy_process_group()


def wrap_model(model: nn.Module, cluster: Cluster) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes.

    On CUDA, batch norm is synchronised so that it normalises over the whole global batch,
    as one process would; every rank then computes the same running statistics, so DDP
    need not broadcast rank 0's before each forward. SyncBatchNorm runs on GPU tensors
    only (over nccl, or gloo), so on the CPU each rank normalises over its own shard (DDP's
    default) and rank 0's running statistics are broadcast and kept.

    Gradients are summed in rank order (see `_sum_in_rank_order`), so the model's bytes do
    not depend on how DDP happens to bucket them.
    """
    if not cluster.is_distributed:
        return model
    if cluster.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[cluster.device], broadcast_buffers=False
        )
    else:
        ddp = nn.parallel.DistributedDataParallel(model)
    ddp.register_comm_hook(None, _sum_in_rank_order)
    return ddp


# (ProcessGroup | None, GradBucket) -> Future[Tensor]. Not annotated: DDP compares a
# hook's annotations with the classes themselves, and `from __future__` makes them strings.
def _sum_in_rank_order(process_group, bucket):
    """DDP's gradient average, with the same float rounding whatever the bucket layout.

    DDP's own all-reduce sums each element in an order that depends on where it falls in
    its bucket (a ring all-reduce splits a bucket into one chunk per rank and starts each
    chunk's sum at another rank). DDP rebuilds its buckets after the first step, so the
    first step after a resume (a new DDP) sums 3 or more ranks' gradients in another order
    than the uninterrupted run did, and the model's bytes drift. Gathering every rank's
    gradients and adding them in rank order gives every element the same sum in any
    layout, on every backend. It sends world_size times the gradients of an all-reduce:
    nothing next to this project's models; dividing first, as DDP does, keeps 2 ranks'
    sums identical to DDP's own.
    """
    world_size = dist.get_world_size(process_group)
    gradients = bucket.buffer().div_(world_size)
    parts = [torch.empty_like(gradients) for _ in range(world_size)]
    work = dist.all_gather(parts, gradients, group=process_group, async_op=True)

    def add_in_rank_order(_: torch.futures.Future) -> torch.Tensor:
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total

    return work.get_future().then(add_in_rank_order)


def sum_across(values: torch.Tensor, cluster: Cluster) -> torch.Tensor:
    """Element-wise sum of a tensor over all ranks (the tensor itself with one process)."""
    if not cluster.is_distributed:
        return values
    total = values.to(cluster.device).clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def gather_states(state: torch.Tensor, cluster: Cluster) -> list[torch.Tensor]:
    """Every rank's copy of a uint8 RNG state, in rank order (on all ranks)."""
    if not cluster.is_distributed:
        return [state]
    local = state.to(cluster.device)
    gathered = [torch.empty_like(local) for _ in range(cluster.world_size)]
    dist.all_gather(gathered, local)
    return [part.cpu() for part in gathered]


def broadcast_bytes(payload: bytes, cluster: Cluster) -> bytes:
    """Rank 0's bytes on every rank, e.g. the checkpoint file that only rank 0 may see.

    Plain bytes, not pickled objects: the receiver decodes them like the file itself.
    """
    if not cluster.is_distributed:
        return payload
    size = torch.tensor([len(payload)], dtype=torch.int64, device=cluster.device)
    dist.broadcast(size, src=0)
    if size.item() == 0:
        return b""
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=cluster.device)
    if cluster.is_main:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return buffer.cpu().numpy().tobytes()


def wait_for_main(cluster: Cluster) -> None:
    """A barrier: the other ranks wait while rank 0 writes the model and logs."""
    if cluster.is_distributed:
        dist.barrier()
