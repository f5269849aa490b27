"""Per-epoch progress on stderr: a live bar on a terminal, the tutorial's lines otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from stages.train import EpochReport


@contextlib.contextmanager
def epoch_reporter(console: Console | None = None) -> Iterator[EpochReport]:
    """Yield a callback for (epoch, epochs, loss).

    Under `dvc repro` or in CI stderr is not a terminal, so a bar would only add noise:
    there each epoch prints the tutorial's `Epoch [k/50] Loss: x.xxxx` line instead.
    """
    console = console or Console(stderr=True)
    if not console.is_terminal:

        def print_line(epoch: int, epochs: int, loss: float) -> None:
            console.print(f"Epoch [{epoch}/{epochs}] Loss: {loss:.4f}", highlight=False)

        yield print_line
        return

    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=None, loss="-")

        def advance(epoch: int, epochs: int, loss: float) -> None:
            progress.update(task, completed=epoch, total=epochs, loss=f"{loss:.4f}")

        yield advance
