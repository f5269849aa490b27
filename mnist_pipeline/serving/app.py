"""The FastAPI app of `mnist-pipeline serve`: the drawing page, /predict, /health, /model.

Bad input of any kind gets a 4xx with {"detail": "<one line>"}, and too much work at once
a 503. Bodies are read with size limits before anything is parsed, uploads stay in memory,
and every CPU-bound step (decoding an image, running the network) happens off the event
loop, on threads of its own with bounds of its own (serving/limits.py). The slow-client
deadlines are in serving/protocol.py; Host, in-flight and header guards in guards.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_pipeline.core.digits import IMAGE_SIDE, PIXELS
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats.image_bounds import ImageLimitError
from mnist_pipeline.serving.decoding import ClientGoneError, Decoder, ServerBusyError
from mnist_pipeline.serving.guards import LOOPBACK_HOSTS, Guard
from mnist_pipeline.serving.inference import Predictor
from mnist_pipeline.serving.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from mnist_pipeline.serving.schemas import (
    ErrorMessage,
    Health,
    ModelInfo,
    PixelsRequest,
    Prediction,
)
from mnist_pipeline.serving.uploads import (
    BodyAccount,
    BodyBudget,
    TooLargeError,
    digit_from_pixels,
    read_body,
    uploaded_file,
)

PAGE = Path(__file__).parent / "page"
_EXPECTED_JSON = f'expected JSON {{"pixels": [{PIXELS} integers 0-255, row by row]}}'
_EXPECTED_BODY = (
    "expected multipart/form-data with a PNG, JPEG or BMP in field 'file', or "
    f'application/json {{"pixels": [{PIXELS} integers 0-255]}}'
)


class UnsupportedTypeError(PipelineError):
    """A body that is neither an upload nor JSON (HTTP 415)."""


class _InvalidPixelsError(PipelineError):
    """JSON that is not 784 pixel values (HTTP 422, like any schema violation)."""


class ModelFailingError(PipelineError):
    """The network gave no usable probabilities for this digit (HTTP 500)."""


class ModelUnavailableError(PipelineError):
    """The start-up probe failed: no prediction is attempted (HTTP 503)."""


_STATUS = (
    (TooLargeError, 413),
    (ImageLimitError, 413),
    (UnsupportedTypeError, 415),
    (_InvalidPixelsError, 422),
    (ModelFailingError, 500),
    (ModelUnavailableError, 503),
    (ServerBusyError, 503),
)


def build_app(
    *,
    model_path: Path,
    threads: int,
    metrics_path: Path,
    lock_path: Path,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """Load the model file, check it answers, and wrap it in the app (`serve`'s work)."""
    from mnist_pipeline.model.model_file import load_model
    from mnist_pipeline.serving.model_info import describe_model

    model, config = load_model(model_path)
    info = describe_model(
        model, config, model_path=model_path, metrics_path=metrics_path, lock_path=lock_path
    )
    predictor = Predictor(model, threads)
    app = create_app(predictor, info, hosts=hosts)
    if app.state.probe_problem is not None:  # never serve a model that cannot answer
        predictor.close()
        raise PipelineError(f"{model_path}: {app.state.probe_problem}")
    return app


def probe(predictor: Predictor) -> str | None:
    """Why the model cannot serve (one line), or None: a prediction on a blank digit."""
    try:
        probabilities = predictor.probabilities(np.zeros((IMAGE_SIDE, IMAGE_SIDE), np.uint8))
        _check_probabilities(probabilities)
    except (PipelineError, RuntimeError, ValueError) as err:
        return f"a probe prediction at start-up failed ({str(err).splitlines()[0][:120]})"
    return None


def _check_probabilities(probabilities: np.ndarray) -> None:
    if probabilities.shape != (10,) or not np.isfinite(probabilities).all():
        raise ModelFailingError(
            f"the model gave {probabilities.shape[0] if probabilities.ndim else 0} values, "
            f"{int((~np.isfinite(probabilities)).sum())} not finite; expected 10 probabilities"
        )


def create_app(
    predictor: Predictor,
    info: ModelInfo,
    *,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    decoder: Decoder | None = None,
    bodies: BodyBudget | None = None,
) -> FastAPI:
    """The app around a loaded model; `hosts`: the Host names it answers to."""
    decoder = decoder or Decoder()
    bodies = bodies or BodyBudget()
    problem = probe(predictor)  # /health is ok only if this succeeded

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        decoder.close()
        predictor.close()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN. /openapi.json stays.
    app = FastAPI(
        title="mnist-pipeline",
        summary="Classify handwritten digits with the model trained by the pipeline.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.probe_problem = problem
    app.add_middleware(Guard, hosts=hosts)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorMessage} for code in (400, 408, 413, 415, 422, 500, 503)
    }

    @app.post("/predict", responses=errors, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request) -> Prediction:
        """Classify one digit: an image upload (field `file`) or JSON `{"pixels": [...]}`."""
        if problem is not None:
            raise ModelUnavailableError(f"the model cannot serve: {problem}")
        async with bodies.account() as account:
            digit = await _digit_from_request(request, account, decoder)
        probabilities = await predictor.predict(digit)  # (10,) float32
        _check_probabilities(probabilities)
        predicted = int(probabilities.argmax())
        return Prediction(
            predicted=predicted,
            confidence=float(probabilities[predicted]),
            probabilities=probabilities.tolist(),
            pixels=digit.ravel().tolist(),
        )

    @app.get("/health", responses={200: {"model": Health}, 503: {"model": Health}})
    async def health() -> Response:
        """ok if a probe prediction succeeded when the server started (else a 503)."""
        answer = Health(status="ok" if problem is None else "failing", arch=info.arch,
                        detail=problem)  # fmt: skip
        content = answer.model_dump(exclude_none=True)
        return JSONResponse(content, status_code=200 if problem is None else 503)

    @app.get("/model")
    async def model() -> ModelInfo:
        """The served model: file name, architecture, training params, test accuracy."""
        return info

    @app.exception_handler(PipelineError)
    async def bad_input(_: Request, err: PipelineError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(err, kind)), 400)
        headers = {"Retry-After": "1"} if isinstance(err, ServerBusyError) else None
        return _error(status, str(err), headers)

    @app.exception_handler(ClientGoneError)
    async def client_gone(_: Request, err: ClientGoneError) -> Response:
        return Response(status_code=499)  # never sent: nobody is there to read it

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, _first_error(err.errors(), _EXPECTED_BODY))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail).splitlines()[0], err.headers)

    for name, media_type in _PAGE_FILES.items():
        _serve_file(app, name, media_type)
    return app


# The page: three files, each at a fixed address (a catch-all static mount would answer
# GET /predict with 404 instead of 405).
_PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


def _serve_file(app: FastAPI, name: str, media_type: str) -> None:
    content = (PAGE / name).read_bytes()  # a few KB, read once

    async def page_file() -> Response:
        return Response(content, media_type=media_type)

    address = "/" if name == "index.html" else f"/{name}"
    app.get(address, include_in_schema=False)(page_file)


async def _digit_from_request(
    request: Request, account: BodyAccount, decoder: Decoder
) -> np.ndarray:
    """The request's digit as uint8 (28, 28), from JSON pixels or an uploaded image."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await read_body(request, limit=MAX_JSON_BYTES, what="JSON body", account=account)
        try:
            pixels = PixelsRequest.model_validate_json(body).pixels
        except ValidationError as err:
            raise _InvalidPixelsError(_first_error(err.errors(), _EXPECTED_JSON)) from None
        return digit_from_pixels(pixels)
    if content_type == "multipart/form-data":
        body = await read_body(request, limit=MAX_UPLOAD_BYTES, what="upload", account=account)
        data, name = await uploaded_file(request, body)
        del body  # the multipart copy is enough
        gone = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, gone))
        try:
            return await decoder.digit(data, name, gone=gone)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    got = content_type or "no Content-Type"
    raise UnsupportedTypeError(f"request body: {got}; {_EXPECTED_BODY}")


async def _watch_disconnect(request: Request, gone: threading.Event) -> None:
    """Set `gone` when the client disconnects (the body is read: the next message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # nothing else is expected; never spin
    gone.set()


def _first_error(errors: Sequence[Any], expected: str) -> str:
    """pydantic's first complaint as one line naming the field, e.g. 'pixels.3: ...'."""
    error = errors[0]
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    message = str(error.get("msg", "invalid")).splitlines()[0]
    got = error.get("input")
    quiet = error.get("type") == "missing" or isinstance(got, dict | list)
    shown = "" if quiet else f" (got {got!r:.40})"
    return f"{where}: {message}{shown}; {expected}"


def _error(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


# /predict reads its body itself (to bound it first), so its two forms are declared here.
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {"schema": PixelsRequest.model_json_schema()},
        },
    }
}
