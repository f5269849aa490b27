"""Per-epoch curves and timings of a training run, logged with DVCLive.

The folder (dvclive/ by default) holds wall-clock times, so no later stage reads it:
its plots and its metrics.json are declared at the top level of dvc.yaml for
`dvc plots show` and `dvc exp show`, while metrics/metrics.json stays byte-stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType

from stages.core.artifacts import atomic_output
from stages.training.stats import EpochReport, EpochStats

TIMING_FILE = "timing.json"


class TrainingLog:
    """A DVCLive run that records each epoch's stats, then forwards them to `report`."""

    def __init__(self, live_dir: Path, report: EpochReport | None = None) -> None:
        # dvcyaml=None: our dvc.yaml declares the plots by hand, DVCLive must not edit it.
        # save_dvc_exp=False: `dvc exp run` makes the experiment; a plain `train` makes none.
        self._live = _files_only_live(live_dir)
        self._report = report
        self._timing_path = Path(live_dir) / TIMING_FILE

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.end()

    def replay(self, history: list[EpochStats]) -> None:
        """Log the epochs of a resumed checkpoint again, without reporting them.

        Rebuilding the curves from the checkpoint's history (rather than appending to
        DVCLive's files with resume=True) gives exactly one row per epoch, whenever the
        earlier run was killed, and also after `dvc repro` has deleted the folder.
        """
        for stats in history:
            self._log(stats)

    def epoch_done(self, stats: EpochStats) -> None:
        self._log(stats)
        if self._report:
            self._report(stats)

    def _log(self, stats: EpochStats) -> None:
        live = self._live
        live.step = stats.epoch  # the x axis of the curves counts epochs from 1
        live.log_metric("train/loss", stats.train_loss)
        live.log_metric("train/accuracy", stats.train_accuracy)
        if stats.val_accuracy is not None and stats.val_loss is not None:
            live.log_metric("val/loss", stats.val_loss)
            live.log_metric("val/accuracy", stats.val_accuracy)
        live.log_metric("lr", stats.lr)
        live.log_metric("epoch_seconds", stats.seconds)
        live.next_step()

    def finish(self, kept_epoch: int, train_seconds: float, images_seen: int) -> None:
        """Record the kept epoch in the summary, and the run's timings in their own file.

        Timings go to `timing.json` (a path containing "timing"), apart from every
        byte-stable metric, so `dvc metrics show` lists them without polluting the rest.
        """
        self._live.summary["kept_epoch"] = kept_epoch
        timing = {
            "train_seconds": round(train_seconds, 3),
            "images_per_second": round(images_seen / max(train_seconds, 1e-9), 1),
        }
        with atomic_output(self._timing_path) as tmp:
            tmp.write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")


def _files_only_live(live_dir: Path):  # -> dvclive.Live
    """A DVCLive logger that only writes its files, without its own DVC/git integration.

    dvc.yaml already declares the folder, its plots and metrics, so that integration adds
    nothing here; and DVCLive 3.x crashes ("Empty git repo") in a git repo that has no
    commit yet, as a fresh `git init` of the project has.
    """
    from dvclive import Live

    class FilesOnlyLive(Live):
        def _init_dvc(self) -> None:
            pass

    return FilesOnlyLive(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
