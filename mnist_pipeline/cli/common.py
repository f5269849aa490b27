"""What every `mnist-pipeline` command shares: default paths, the params option, clean
failures and output checks.

Path defaults equal the paths in dvc.yaml (tests/test_dvc_yaml.py checks that they
agree); hyperparameters come only from params.yaml.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

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


def fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a PipelineError into one line on stderr and exit status 1, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ParamsError as err:  # name the params file actually in use
            typer.echo(f"error: {kwargs.get('params', PARAMS)}: {err}", err=True)
            raise typer.Exit(1) from None
        except PipelineError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def check_outputs(files: list[Path], **where: list) -> None:
    """Refuse an output that is a folder, unwritable or an input, before any work."""
    from mnist_pipeline.core.artifacts import check_outputs as check  # numpy: not for --help

    check(files, **where)


def new_app(**settings: object) -> typer.Typer:
    """A Typer app with the project's settings: no completion, no pretty tracebacks."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, **settings)


def run_command(command: Callable[..., object], prog_name: str) -> None:
    """Run one command as a program of its own (a stage entry point in stages/)."""
    app = new_app()
    app.command()(command)
    app(prog_name=prog_name)
