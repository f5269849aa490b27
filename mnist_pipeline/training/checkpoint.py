"""Checkpoint and resume: the whole training state, written atomically after every epoch.

The checkpoint folder (data/checkpoint/ by default) is a `persist: true`, `cache: false`
out of the train stage: DVC leaves it alone between runs, so a run killed half-way
resumes where its last finished epoch left off, and ends with the same model bytes as an
uninterrupted run. A finished run deletes its checkpoint, so the folder then holds only
its .gitignore and `dvc repro -f` trains from scratch.

A checkpoint is a `torch.save` of plain tensors, numbers, strings, lists and dicts, and is
read only with `torch.load(weights_only=True)`, which runs no code from the file.
"""

from __future__ import annotations

import copy
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.console import say
from mnist_pipeline.training.checkpoint_schema import FORMAT_VERSION, validate_checkpoint
from mnist_pipeline.training.distributed import Cluster, broadcast_bytes, gather_states
from mnist_pipeline.training.fingerprint import first_difference
from mnist_pipeline.training.stats import EpochStats

CHECKPOINT_FILE = "train.pt"
# Written at most this often (and on Ctrl-C or a crash): a 5 MB file after every 0.03 s
# epoch would cost more than the epochs. A kill -9 loses at most this much training.
# The variable overrides it (0 = after every epoch), e.g. for tests that kill a run.
SAVE_EVERY_SECONDS = 10.0
SAVE_EVERY_VARIABLE = "MNIST_PIPELINE_CHECKPOINT_SECONDS"


def _save_every_default() -> float:
    return float(os.environ.get(SAVE_EVERY_VARIABLE, SAVE_EVERY_SECONDS))


# Keeps git away from a crashed run's checkpoint, and is all a finished run leaves behind,
# so the folder exists (and hashes the same) in every clone.
GITIGNORE = (
    "# Written by `train`: an unfinished run's checkpoint, never committed.\n/*\n!/.gitignore\n"
)


@dataclass(frozen=True)
class Checkpoint:
    """The training state after `epoch` epochs, every tensor on the CPU.

    The file holds `to_dict()` plus `format` and `made_with` (see `CheckpointStore.save`).
    """

    epoch: int  # epochs done
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # optimizer.state_dict()
    schedule: dict[str, Any] | None  # lr schedule's state_dict(), None without one
    generators: dict[str, torch.Tensor]  # "order", "augment": the loop's generator states
    torch_rng: tuple[torch.Tensor, ...]  # each rank's global CPU RNG (dropout), rank order
    cuda_rng: tuple[torch.Tensor, ...]  # each rank's GPU RNG on CUDA, else ()
    history: tuple[EpochStats, ...]
    best_model: dict[str, torch.Tensor] | None  # keep=best: the best epoch's weights

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors, numbers, strings, lists and dicts: what weights_only loads."""
        return {
            "epoch": self.epoch,
            "model": self.model,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "rng": {**self.generators, "torch": list(self.torch_rng), "cuda": list(self.cuda_rng)},
            "history": [asdict(stats) for stats in self.history],
            "best_model": self.best_model,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Checkpoint:
        rng = dict(payload["rng"])
        torch_rng, cuda_rng = rng.pop("torch"), rng.pop("cuda")
        return cls(
            epoch=payload["epoch"],
            model=payload["model"],
            optimizer=payload["optimizer"],
            schedule=payload["schedule"],
            generators=rng,
            torch_rng=tuple(torch_rng),
            cuda_rng=tuple(cuda_rng),
            history=tuple(EpochStats(**stats) for stats in payload["history"]),
            best_model=payload["best_model"],
        )


class CheckpointStore:
    """The checkpoint file of one run: load it if it fits, save it, clear it at the end."""

    def __init__(
        self,
        folder: Path,
        fingerprint: dict[str, Any],
        cluster: Cluster,
        save_every: float | None = None,
    ) -> None:
        self.path = Path(folder) / CHECKPOINT_FILE
        self._fingerprint = fingerprint
        self._cluster = cluster
        # Time-based saving: `save` keeps the newest checkpoint in memory and writes it
        # once `save_every` seconds have passed since the last write; `flush` writes it now.
        self._save_every = _save_every_default() if save_every is None else save_every
        self._last_write = time.monotonic()
        self._pending: dict[str, Any] | None = None  # the file's content, not yet written
        self._written_epoch: int | None = None
        if cluster.is_main:
            sweep_stale_temps(Path(folder))
            gitignore = Path(folder) / ".gitignore"
            gitignore.parent.mkdir(parents=True, exist_ok=True)
            if not gitignore.is_file() or gitignore.read_text() != GITIGNORE:
                with atomic_output(gitignore) as tmp:
                    tmp.write_text(GITIGNORE)

    def load(self) -> Checkpoint | None:
        """The checkpoint if it was made by this very run, else None (and say why).

        Only rank 0 reads the file (other machines may not see it), decodes, validates it
        and compares its fingerprint, and decides; the decision, then the bytes, reach the
        other ranks (which decode them with weights_only=True), so no rank can decide
        otherwise and leave the others waiting.
        """
        main = self._cluster.is_main
        payload, saved, problem = b"", None, None
        if main and self.path.is_file():
            payload = self.path.read_bytes()
            saved, problem = _decode(payload)
            if saved is not None:
                problem = first_difference(saved["made_with"], self._fingerprint)
            if problem is not None:
                say(f"ignoring {self.path}: {problem}; training from scratch, overwriting it")
                saved = None
        resume = broadcast_bytes(b"resume" if saved is not None else b"", self._cluster)
        if not resume:
            return None
        payload = broadcast_bytes(payload if main else b"", self._cluster)
        if not main:
            saved, problem = _decode(payload)  # the very bytes rank 0 accepted
        if saved is None:  # rank 0 decided to resume: it decoded them
            raise RuntimeError(f"rank {self._cluster.rank} cannot decode: {problem}")
        checkpoint = Checkpoint.from_dict(saved)
        if main:
            say(f"resuming from {self.path}: {checkpoint.epoch} epoch(s) already done")
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Keep the checkpoint; write it (atomically, rank 0 only) if the last write is
        `save_every` seconds old. A kill leaves the previous file, a Ctrl-C this one."""
        if not self._cluster.is_main:
            return
        self._pending = {
            "format": FORMAT_VERSION,
            "made_with": self._fingerprint,
            **checkpoint.to_dict(),
        }
        if time.monotonic() - self._last_write >= self._save_every:
            self.flush()

    def flush(self) -> tuple[int, int] | None:
        """Write the newest checkpoint now; (epochs done, epochs) of the file, or None."""
        if self._cluster.is_main and self._pending is not None:
            with atomic_output(self.path) as tmp:
                torch.save(self._pending, tmp)
            self._written_epoch = self._pending["epoch"]
            self._pending = None
            self._last_write = time.monotonic()
        if self._written_epoch is None:
            return None
        return self._written_epoch, self._fingerprint["train"]["epochs"]

    def clear(self) -> None:
        """Delete the checkpoint once the model is written: the run is finished."""
        if self._cluster.is_main:
            self._pending = None
            self.path.unlink(missing_ok=True)

    def keep_newest(self) -> str:
        """After Ctrl-C: write the newest checkpoint now, and say in one line what was kept."""
        kept = self.flush()
        if kept is None and self.path.is_file():
            return (
                f"interrupted: the checkpoint in {self.path} is kept as it was; running train "
                "again with the same params resumes from it (`dvc repro` too)"
            )
        if kept is None:
            return NOTHING_KEPT
        done, epochs = kept
        return (
            f"interrupted: kept epoch {done} of {epochs} in {self.path}; running train again "
            "with the same params resumes from there (`dvc repro` too)"
        )


NOTHING_KEPT = (
    "interrupted before the first epoch finished: nothing kept; running train again starts "
    "from scratch"
)


def capture(
    *,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    generators: dict[str, torch.Generator],
    history: list[EpochStats],
    best_model: dict[str, torch.Tensor] | None,
    cluster: Cluster,
) -> Checkpoint | None:
    """The training state after `epoch` on rank 0, None on the others.

    Every rank calls it, since every rank's RNG states are gathered; only rank 0, which
    alone writes the file, copies the model and optimizer to the CPU.
    """
    # Dropout draws from each rank's own global RNG: the CPU one, or the GPU's on CUDA.
    torch_rng = gather_states(torch.get_rng_state(), cluster)
    on_cuda = cluster.device.type == "cuda"
    cuda_rng = gather_states(torch.cuda.get_rng_state(cluster.device), cluster) if on_cuda else []
    if not cluster.is_main:
        return None
    return Checkpoint(
        epoch=epoch,
        model=_to_cpu(model.state_dict()),
        optimizer=_to_cpu(optimizer.state_dict()),
        schedule=copy.deepcopy(schedule.state_dict()) if schedule is not None else None,
        generators={name: gen.get_state() for name, gen in generators.items()},
        torch_rng=tuple(torch_rng),
        cuda_rng=tuple(cuda_rng),
        history=tuple(history),
        best_model=_to_cpu(best_model),
    )


def restore(
    checkpoint: Checkpoint,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    generators: dict[str, torch.Generator],
    cluster: Cluster,
) -> dict[str, torch.Tensor] | None:
    """Put the saved state back into freshly built objects, this rank's RNG included.

    Returns the best weights so far (keep=best) on the training device, or None.
    """
    model.load_state_dict(checkpoint.model)
    optimizer.load_state_dict(checkpoint.optimizer)  # moves its tensors to the params
    if schedule is not None and checkpoint.schedule is not None:  # validated: both or none
        schedule.load_state_dict(checkpoint.schedule)
    for name, generator in generators.items():
        generator.set_state(checkpoint.generators[name])
    torch.set_rng_state(checkpoint.torch_rng[cluster.rank])
    if cluster.device.type == "cuda":
        torch.cuda.set_rng_state(checkpoint.cuda_rng[cluster.rank], cluster.device)
    best = checkpoint.best_model
    return None if best is None else {name: t.to(cluster.device) for name, t in best.items()}


def _decode(payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's dict, None), or (None, why it cannot be used)."""
    try:
        checkpoint = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # any failure on a hostile file (zip, pickle, storage errors)
        first_line = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
        reason = first_line or type(err).__name__
        return None, f"not a checkpoint that can be loaded safely ({reason})"
    problem = validate_checkpoint(checkpoint)
    if problem is not None:
        return None, f"not a usable checkpoint: {problem}"
    return checkpoint, None


def sweep_stale_temps(folder: Path) -> None:
    """Delete temp files that a run killed while saving left behind (atomic_output's names).

    They would otherwise stay in the persisted checkpoint folder for good, and change
    its hash. Only rank 0 writes there, and only one run trains in a folder at a time.
    """
    for stale in Path(folder).glob(".*.tmp"):
        if stale.is_file() and stale.name.startswith((f".{CHECKPOINT_FILE}.", "..gitignore.")):
            stale.unlink(missing_ok=True)


def _to_cpu(tree: Any) -> Any:
    """A copy of nested dicts/lists with every tensor on the CPU (loads on any machine)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)  # a copy: training goes on updating it
    if isinstance(tree, dict):
        return {key: _to_cpu(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_to_cpu(value) for value in tree)
    return tree
