"""Data-parallel training with PyTorch's own machinery: torchrun and DistributedDataParallel.

`torchrun --nproc-per-node=N -m stages train` starts N copies of the command and tells
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

from stages.training.runtime import resolve_device


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
def session(requested_device: str) -> Iterator[Cluster]:
    """The cluster that torchrun describes (or a world of one), with its process group.

    gloo connects CPU processes, nccl GPU ones. The group is destroyed on the way out,
    also when training fails, so that no process is left waiting.
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
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield cluster
    finally:
        dist.destroy_process_group()


def wrap_model(model: nn.Module, cluster: Cluster) -> nn.Module:
    """DistributedDataParallel around the model when there are several processes.

    On CUDA, batch norm is synchronised so that it normalises over the whole global batch,
    as one process would; gloo has no SyncBatchNorm, so on CPU each rank normalises over
    its own shard (DDP's default), and rank 0's running statistics are kept.
    """
    if not cluster.is_distributed:
        return model
    if cluster.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[cluster.device])
    return nn.parallel.DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


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
