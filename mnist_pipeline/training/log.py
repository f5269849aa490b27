"""Per-epoch curves and timings of a training run, in DVCLive's file layout.

    dvclive/metrics.json                   the last epoch's train (and val) loss and accuracy
    dvclive/run.json                       the epochs run and the kept epoch (not a metric)
    dvclive/plots/metrics/train/loss.tsv   one `step<TAB>loss` row per epoch; likewise
                                           train/accuracy, val/loss, val/accuracy, lr
    dvclive/timing.json                    wall-clock: training time, throughput
    dvclive/epoch_seconds.tsv              wall-clock: each epoch's time

The files are written here rather than through the dvclive package: its import costs
about a second of train's start-up, it needs a private hook to run in a git repo with no
commit yet, and this layout is all that `dvc plots show`, `dvc metrics show` and
`dvc exp show` read (they know nothing of dvclive). The folder is a cached DVC output of
the train stage, switched as a whole by `dvc checkout` and `dvc exp apply`; the train
command copies metrics.json to metrics/train.json, which git keeps, so that `dvc metrics
diff` has it in a fresh clone too. metrics.json holds only the headline numbers, so `dvc
exp show` stays narrow. The curves depend only on the training, so the folder's hash is
the same on every run; the two wall-clock files are listed in .dvcignore, so DVC neither
hashes nor caches them, and git ignores the folder: they are no DVC metric or plot and
describe the last run in this workspace only (`dvc checkout` of the folder removes
them). No run leaves git or dvc.lock modified.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import TracebackType

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.training.stats import EpochReport, EpochStats

METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"  # epochs run, kept epoch: facts of the run, not metrics to compare
TIMING_FILE = "timing.json"  # in .dvcignore: wall-clock
CURVES = Path("plots", "metrics")
EPOCH_SECONDS = "epoch_seconds.tsv"  # in .dvcignore: wall-clock


class TrainingLog:
    """Records each epoch's stats as DVCLive would, then forwards them to `report`."""

    def __init__(self, live_dir: Path, report: EpochReport | None = None) -> None:
        self._dir = Path(live_dir)
        self._report = report
        self._summary: dict = {}
        self._epochs = 0
        # A fresh run: no curve may keep rows of an earlier one (DVCLive does the same).
        shutil.rmtree(self._dir / CURVES.parts[0], ignore_errors=True)
        for name in (METRICS_FILE, RUN_FILE, TIMING_FILE, EPOCH_SECONDS):
            (self._dir / name).unlink(missing_ok=True)
        self._dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass  # every file is complete after each epoch

    def replay(self, history: list[EpochStats]) -> None:
        """Log the epochs of a resumed checkpoint again, without reporting them.

        Rebuilding the curves from the checkpoint's history (rather than appending to
        the files of the killed run) gives exactly one row per epoch, whenever the
        earlier run was killed, and also after `dvc repro` has deleted the folder.
        """
        for stats in history:
            self._log(stats)

    def epoch_done(self, stats: EpochStats) -> None:
        self._log(stats)
        if self._report:
            self._report(stats)

    def _log(self, stats: EpochStats) -> None:
        values = {"train/loss": stats.train_loss, "train/accuracy": stats.train_accuracy}
        if stats.val_accuracy is not None and stats.val_loss is not None:
            values |= {"val/loss": stats.val_loss, "val/accuracy": stats.val_accuracy}
        for name, value in values.items():
            self._append(CURVES / f"{name}.tsv", stats.epoch, value)
            section, leaf = name.split("/")
            self._summary.setdefault(section, {})[leaf] = value
        self._append(CURVES / "lr.tsv", stats.epoch, stats.lr)  # a curve, not a metric
        self._append(Path(EPOCH_SECONDS), stats.epoch, stats.seconds)
        self._epochs = stats.epoch  # the x axis of the curves counts epochs from 1
        self._write_json(METRICS_FILE, self._summary)

    def _append(self, relative: Path, step: int, value: float) -> None:
        path = self._dir / relative
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"step\t{path.stem}\n")
        with path.open("a") as file:
            file.write(f"{step}\t{value!r}\n")  # repr: the float's exact digits

    def _write_json(self, name: str, content: dict) -> None:
        with atomic_output(self._dir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=4) + "\n")

    def finish(self, kept_epoch: int, train_seconds: float, images_seen: int) -> None:
        """Record the epochs run and the kept one, and the run's timings in their own file.

        Timings go to `timing.json`, apart from every byte-stable value (it is in
        .dvcignore), so they never change the folder's hash.
        """
        self._write_json(RUN_FILE, {"epochs": self._epochs, "kept_epoch": kept_epoch})
        timing = {
            "train_seconds": round(train_seconds, 3),
            "images_per_second": round(images_seen / max(train_seconds, 1e-9), 1),
        }
        with atomic_output(self._dir / TIMING_FILE) as tmp:
            tmp.write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")
