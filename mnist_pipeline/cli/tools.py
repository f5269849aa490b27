"""Commands beside the pipeline: serve the model, export it, write the plots template."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from mnist_pipeline.cli.common import (
    LOCK,
    METRICS,
    MODEL,
    OFFLINE_PLOTS_TEMPLATE,
    ONNX_MODEL,
    PARAMS,
    ParamsOption,
    check_outputs,
    fail_cleanly,
)
from mnist_pipeline.core.console import say  # progress and summaries: stderr
from mnist_pipeline.core.params import load_params


@fail_cleanly
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
    from mnist_pipeline.tools import offline_plots

    load_params(params)
    size = offline_plots.run(output)
    say(f"wrote {output} ({size / 1e6:.1f} MB)")


class ExportFormat(StrEnum):
    onnx = "onnx"


@fail_cleanly
def serve(
    model: Annotated[Path, typer.Option(help="Model file written by `train`.")] = MODEL,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; 0.0.0.0 exposes it to the network (no authentication, "
            "no TLS: put a reverse proxy in front, docs/serving.md)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Another Host name to answer to (repeatable; '*.lab.example' for a domain). "
            "Always allowed: localhost, 127.0.0.1, ::1, --host and the address connected to.",
        ),
    ] = None,
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
    from mnist_pipeline.serving.app import build_app
    from mnist_pipeline.serving.guards import allowed_hosts, is_loopback
    from mnist_pipeline.serving.server import run_server

    threads = load_params(params).runtime.threads
    hosts = allowed_hosts(host, allowed_host or ())
    web_app = build_app(
        model_path=model, threads=threads, metrics_path=metrics, lock_path=lock, hosts=hosts
    )
    if not is_loopback(host):
        say(f"warning: --host {host} exposes the server to the network with no "
            "authentication or TLS; put a reverse proxy in front (docs/serving.md)")  # fmt: skip
    say(f"serving {model} on http://{host}:{port}/ (Ctrl+C to stop)")
    run_server(web_app, host=host, port=port)


@fail_cleanly
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
    from mnist_pipeline.serving import onnx_export

    load_params(params)
    check_outputs([output], inputs=[model, params])  # as predict: before any work
    size = onnx_export.run(model, output)
    say(f"wrote {output} ({size / 1e6:.2f} MB, format {format.value})")
