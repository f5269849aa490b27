"""Per-epoch progress on stderr: a live bar on a terminal, the tutorial's lines otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mnist_pipeline.training.stats import EpochReport, EpochStats


def epoch_line(stats: EpochStats) -> str:
    """The tutorial's `Epoch [k/50] Loss: x.xxxx`, plus validation accuracy when there is one."""
    line = f"Epoch [{stats.epoch}/{stats.epochs}] Loss: {stats.train_loss:.4f}"
    if stats.val_accuracy is not None:
        line += f" Val accuracy: {stats.val_accuracy:.4f}"
    return line


@contextlib.contextmanager
def epoch_reporter(console: Console | None = None) -> Iterator[EpochReport]:
    """Yield a callback that shows each epoch's stats.

    Under `dvc repro` or in CI stderr is not a terminal, so a bar would only add noise:
    there each epoch prints one line (see `epoch_line`) instead.
    """
    console = console or Console(stderr=True)
    if not console.is_terminal:

        def print_line(stats: EpochStats) -> None:
            console.print(epoch_line(stats), highlight=False)

        yield print_line
        return

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val acc {task.fields[val_accuracy]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, loss="-", val_accuracy="-")

        def advance(stats: EpochStats) -> None:
            val_accuracy = "-" if stats.val_accuracy is None else f"{stats.val_accuracy:.4f}"
            progress.update(
                task,
                completed=stats.epoch,
                total=stats.epochs,
                loss=f"{stats.train_loss:.4f}",
                val_accuracy=val_accuracy,
            )

        yield advance
