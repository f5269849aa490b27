"""Stage `train`: fit the network on the prepared training tensors and save the model file.

The loop itself is in mnist_pipeline/training/loop.py. This module wires it to files: it resumes
from a checkpoint of the same run (mnist_pipeline/training/checkpoint.py), logs per-epoch curves
and timings to a DVCLive folder, and writes the model file. It trains on the CPU or a GPU
(`train.device`), in one process or data-parallel under torchrun.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from mnist_pipeline.core.artifacts import load_prepared
from mnist_pipeline.core.errors import Interrupted
from mnist_pipeline.core.params import ModelParams, TrainParams
from mnist_pipeline.model.model_file import save_model
from mnist_pipeline.training.checkpoint import NOTHING_KEPT, CheckpointStore
from mnist_pipeline.training.distributed import session, wait_for_main
from mnist_pipeline.training.fingerprint import made_with
from mnist_pipeline.training.log import TrainingLog
from mnist_pipeline.training.loop import TrainResult, best_epoch, train_model
from mnist_pipeline.training.runtime import uses_bf16
from mnist_pipeline.training.stats import EpochReport


def run(
    *,
    train_path: Path,
    model_path: Path,
    live_dir: Path | None,
    model_params: ModelParams,
    train_params: TrainParams,
    threads: int,
    report: EpochReport | None = None,
    checkpoint_dir: Path | None = None,
    backend: str | None = None,
) -> TrainResult:
    """Train (resuming from a checkpoint of this run), write the model file, log curves.

    Under torchrun every process trains; rank 0 alone writes the model, the checkpoints
    and the DVCLive folder, while the others wait for it. `live_dir` None logs no curves
    (and needs no DVCLive); `backend` overrides torch.distributed's (see `session`).
    """
    digits = load_prepared(train_path)
    with session(train_params.device, backend=backend) as cluster:
        quiet = not cluster.is_main  # under torchrun only rank 0 speaks
        bf16 = uses_bf16(train_params.precision, train_params.device, cluster.device, quiet)
        store, resume = None, None
        if checkpoint_dir is not None:
            fingerprint = made_with(
                model_params=model_params,
                train_params=train_params,
                threads=threads,
                train_path=train_path,
                cluster=cluster,
                bf16=bf16,
            )
            store = CheckpointStore(checkpoint_dir, fingerprint, cluster)
            resume = store.load()
        log = TrainingLog(live_dir, report) if cluster.is_main and live_dir else None
        with log or contextlib.nullcontext():
            if log and resume:  # a fresh DVCLive run, one row per epoch: no duplicates
                log.replay(list(resume.history))
            started = time.perf_counter()
            try:
                result = train_model(
                    digits,
                    model_params,
                    train_params,
                    threads,
                    log.epoch_done if log else report,
                    cluster=cluster,
                    bf16=bf16,
                    resume=resume,
                    save_checkpoint=store.save if store else None,
                )
            except KeyboardInterrupt:  # Ctrl-C: keep the newest epoch, say what was kept
                raise Interrupted(store.keep_newest() if store else NOTHING_KEPT) from None
            except Exception:  # a crash keeps the newest epoch too, then fails as it would
                if store:
                    store.flush()
                raise
            train_seconds = time.perf_counter() - started
            if log:
                epochs_run = train_params.epochs - (resume.epoch if resume else 0)
                images_seen = (len(digits.images) - train_params.val_size) * epochs_run
                log.finish(_kept_epoch(result, train_params), train_seconds, images_seen)
        if cluster.is_main:
            save_model(result.model, result.config, model_path)
            if store:
                store.clear()  # only now: a kill before this line resumes from the end
        wait_for_main(cluster)
    return result


def _kept_epoch(result: TrainResult, train_params: TrainParams) -> int:
    return best_epoch(result.history) if train_params.keep == "best" else train_params.epochs
