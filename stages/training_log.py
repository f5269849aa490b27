"""Per-epoch curves and timings of a training run, logged with DVCLive.

The folder (dvclive/ by default) holds wall-clock times, so no later stage reads it:
its plots and its metrics.json are declared at the top level of dvc.yaml for
`dvc plots show` and `dvc exp show`, while metrics/metrics.json stays byte-stable.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from stages.train import EpochReport, EpochStats


class TrainingLog:
    """A DVCLive run that records each epoch's stats, then forwards them to `report`."""

    def __init__(self, live_dir: Path, report: EpochReport | None = None) -> None:
        from dvclive import Live

        # dvcyaml=None: our dvc.yaml declares the plots by hand, DVCLive must not edit it.
        # save_dvc_exp=False: `dvc exp run` makes the experiment; a plain `train` makes none.
        self._live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        self._report = report

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._live.end()

    def epoch_done(self, stats: EpochStats) -> None:
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
        if self._report:
            self._report(stats)

    def finish(self, kept_epoch: int, train_seconds: float, images_seen: int) -> None:
        """Add the run's totals to the summary (dvclive/metrics.json)."""
        self._live.summary["kept_epoch"] = kept_epoch
        self._live.summary["timing"] = {
            "train_seconds": round(train_seconds, 3),
            "images_per_second": round(images_seen / train_seconds, 1),
        }
