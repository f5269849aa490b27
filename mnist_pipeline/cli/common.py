"""What every `mnist-pipeline` command shares: default paths, the params option, clean
failures and output checks.

Path defaults equal the paths in dvc.yaml (tests/test_dvc_yaml.py checks that they
agree); hyperparameters come only from params.yaml.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from mnist_pipeline.core.errors import ParamsError, PipelineError

# Default paths: the same as in dvc.yaml.
PARAMS = Path("params.yaml")
RAW_TRAIN = Path("data/raw/train.csv")
RAW_TEST = Path("data/raw/test.csv")
PREPARED_TRAIN = Path("data/prepared/train.safetensors")
PREPARED_TEST = Path("data/prepared/test.safetensors")
MODEL = Path("data/model.safetensors")
PREDICTIONS = Path("data/predictions.csv")
METRICS = Path("metrics/metrics.json")
TRAIN_METRICS = Path("metrics/train.json")
LIVE_DIR = Path("dvclive")
CHECKPOINT_DIR = Path("data/checkpoint")
CONFUSION_TABLE = Path("plots/confusion.csv")
DIGIT_ACCURACY_TABLE = Path("plots/digit_accuracy.csv")
PICTURES = Path("plots/pictures")
OFFLINE_PLOTS_TEMPLATE = Path(".dvc/offline_plots.html")
ONNX_MODEL = Path("data/model.onnx")
LOCK = Path("dvc.lock")

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file (validated before anything runs).")
]

P = ParamSpec("P")
R = TypeVar("R")


def _after_dvc_deleted_outputs() -> str:
    """What to add to an error line when DVC ran the command (it sets DVC_STAGE): it has
    deleted the stage's outputs, and `dvc exp run -S` has rewritten params.yaml."""
    if not os.environ.get("DVC_STAGE"):
        return ""
    from mnist_pipeline.cli.restore import RESTORE_HINT  # stdlib and yaml only

    return f" (to get the last commit's params and outputs back: {RESTORE_HINT})"


def fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a PipelineError into one line on stderr and exit status 1, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ParamsError as err:  # name the params file actually in use
            params = kwargs.get("params", PARAMS)
            typer.echo(f"error: {params}: {err}{_after_dvc_deleted_outputs()}", err=True)
            raise typer.Exit(1) from None
        except PipelineError as err:
            typer.echo(f"error: {err}{_after_dvc_deleted_outputs()}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def check_outputs(files: list[Path], **where: list) -> None:
    """Refuse an output that is a folder, unwritable or an input, before any work."""
    from mnist_pipeline.core.artifacts import check_outputs as check  # numpy: not for --help

    check(files, **where)


# Plain help (click's formatter, not rich's): paragraphs rewrapped to the terminal's width
# (up to 100 columns), no markup to eat text in [brackets], and -h as well as --help.
HELP_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def new_app(**settings: Any) -> typer.Typer:
    """A Typer app with the project's settings: plain help, no completion, no pretty
    tracebacks."""
    return typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings=HELP_SETTINGS,
        **settings,
    )


def run_command(command: Callable[..., object], prog_name: str) -> None:
    """Run one command as a program of its own (a stage entry point in stages/)."""
    app = new_app()
    app.command()(command)
    try:
        app(prog_name=prog_name)
    except Exception:  # a bug: its traceback, then how to undo what DVC already deleted
        if hint := _after_dvc_deleted_outputs():
            traceback.print_exc()
            typer.echo(f"error: {prog_name} crashed{hint}", err=True)
            raise SystemExit(1) from None
        raise
