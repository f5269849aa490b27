"""The FastAPI app of `mnist-pipeline serve`: the drawing page, /predict, /health, /model.

Bad input of any kind gets a 4xx with {"detail": "<one line>"}. Bodies are read with a
size limit before anything is parsed, uploads stay in memory, and every CPU-bound step
(decoding an image, running the network) happens off the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from mnist_pipeline.core.digits import PIXELS
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.serving.inference import Predictor
from mnist_pipeline.serving.schemas import (
    ErrorMessage,
    Health,
    ModelInfo,
    PixelsRequest,
    Prediction,
)
from mnist_pipeline.serving.uploads import (
    MAX_JSON_BYTES,
    MAX_UPLOAD_BYTES,
    TooLargeError,
    digit_from_pixels,
    digit_from_upload,
)

PAGE = Path(__file__).parent / "page"
# The page loads nothing from anywhere else: a CDN or an injected script would be refused.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'"
_EXPECTED_JSON = f'expected JSON {{"pixels": [{PIXELS} integers 0-255, row by row]}}'
_EXPECTED_BODY = (
    "expected multipart/form-data with a PNG, JPEG or BMP in field 'file', or "
    f'application/json {{"pixels": [{PIXELS} integers 0-255]}}'
)


class UnsupportedTypeError(PipelineError):
    """A body that is neither an upload nor JSON (HTTP 415)."""


class _InvalidPixelsError(PipelineError):
    """JSON that is not 784 pixel values (HTTP 422, like any schema violation)."""


_STATUS = ((TooLargeError, 413), (UnsupportedTypeError, 415), (_InvalidPixelsError, 422))


def build_app(*, model_path: Path, threads: int, metrics_path: Path, lock_path: Path) -> FastAPI:
    """Load the model file and wrap it in the app (the `serve` command's work)."""
    from mnist_pipeline.model.model_file import load_model
    from mnist_pipeline.serving.model_info import describe_model

    model, config = load_model(model_path)
    info = describe_model(
        model, config, model_path=model_path, metrics_path=metrics_path, lock_path=lock_path
    )
    return create_app(Predictor(model, threads), info)


def create_app(predictor: Predictor, info: ModelInfo) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        predictor.close()

    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN. /openapi.json stays.
    app = FastAPI(
        title="mnist-pipeline",
        summary="Classify handwritten digits with the model trained by the pipeline.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    errors = {code: {"model": ErrorMessage} for code in (400, 413, 415, 422)}

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.post("/predict", responses=errors, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request) -> Prediction:
        """Classify one digit: an image upload (field `file`) or JSON `{"pixels": [...]}`."""
        digit = await _digit_from_request(request)
        probabilities = await predictor.predict(digit)  # (10,) float32
        predicted = int(probabilities.argmax())
        return Prediction(
            predicted=predicted,
            confidence=float(probabilities[predicted]),
            probabilities=probabilities.tolist(),
            pixels=digit.ravel().tolist(),
        )

    @app.get("/health")
    async def health() -> Health:
        """The server is up and has a model loaded."""
        return Health(arch=info.arch)

    @app.get("/model")
    async def model() -> ModelInfo:
        """The served model: architecture, training params, test accuracy if known."""
        return info

    @app.exception_handler(PipelineError)
    async def bad_input(_: Request, err: PipelineError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(err, kind)), 400)
        return _error(status, str(err))

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


async def _digit_from_request(request: Request) -> np.ndarray:
    """The request's digit as uint8 (28, 28), from JSON pixels or an uploaded image."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await _read_body(request, MAX_JSON_BYTES, "JSON body")
        try:
            pixels = PixelsRequest.model_validate_json(body).pixels
        except ValidationError as err:
            raise _InvalidPixelsError(_first_error(err.errors(), _EXPECTED_JSON)) from None
        return digit_from_pixels(pixels)
    if content_type == "multipart/form-data":
        body = await _read_body(request, MAX_UPLOAD_BYTES, "upload")
        data, name = await _uploaded_file(request, body)
        return await run_in_threadpool(digit_from_upload, data, name)  # decoding is CPU work
    got = content_type or "no Content-Type"
    raise UnsupportedTypeError(f"request body: {got}; {_EXPECTED_BODY}")


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (declared or streamed)."""
    too_large = f"{what}: larger than {limit:,} bytes; expected at most {limit:,}"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLargeError(too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


class _InMemoryMultiPart(MultiPartParser):
    # Starlette spools file parts over 1 MB to a temp file; the body is bounded, so the
    # upload can stay in memory and nothing a client sends is written to disk.
    spool_max_size = MAX_UPLOAD_BYTES


async def _uploaded_file(request: Request, body: bytes) -> tuple[bytes, str]:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    parser = _InMemoryMultiPart(request.headers, stream(), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise PipelineError(f"upload: malformed multipart body ({err.message})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise PipelineError("upload: no file in field 'file'; " + _EXPECTED_BODY)
    name = "".join(c for c in (upload.filename or "upload") if c.isprintable())[:100]
    return await upload.read(), name or "upload"


def _first_error(errors: list[dict] | tuple, expected: str) -> str:
    """pydantic's first complaint as one line naming the field, e.g. 'pixels.3: ...'."""
    error = errors[0]
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    message = str(error.get("msg", "invalid")).splitlines()[0]
    got = error.get("input")
    quiet = error.get("type") == "missing" or isinstance(got, dict | list)
    shown = "" if quiet else f" (got {got!r:.40})"
    return f"{where}: {message}{shown}; {expected}"


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
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
