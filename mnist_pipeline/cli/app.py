"""The `mnist-pipeline` command: the five stage commands, then serve, export and the plots
template, in the order `--help` lists them.

`main` is the installed command's entry point and `python -m mnist_pipeline`'s: it pins the
portable CPU kernels before any command imports torch, then runs the command. Nothing
imported here imports torch at module level.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from mnist_pipeline.cli import pipeline, tools
from mnist_pipeline.cli.common import new_app
from mnist_pipeline.core.kernels import pin_portable_kernels

app = new_app(name="mnist-pipeline", no_args_is_help=True)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mnist-pipeline {metadata.version('mnist-pipeline')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """The PyTorch MNIST tutorial as a reproducible pipeline: split, prepare, train, predict,
    evaluate. `dvc repro` runs them all; each command also runs on its own."""


for command in pipeline.STAGE_COMMANDS:
    app.command()(command)
app.command()(pipeline.restore)
app.command("plots-template")(tools.plots_template)
app.command()(tools.serve)
app.command()(tools.export)


def main() -> None:
    """Pin the kernels (mnist_pipeline/core/kernels.py), then run `mnist-pipeline`."""
    pin_portable_kernels()
    app(prog_name="mnist-pipeline")
