"""Request bodies -> bytes of an upload or JSON pixels, bounded in bytes, never on disk.

Each body is refused as soon as it passes its own limit, and all bodies held at once
share MAX_BUFFERED_BODY_BYTES, so that many large uploads arriving together are a 503,
not a gigabyte. Decoding the upload is serving/decoding.py's job.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from mnist_pipeline.core.digits import IMAGE_SIDE
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.serving.decoding import ClientGoneError, ServerBusyError
from mnist_pipeline.serving.limits import MAX_BUFFERED_BODY_BYTES, MAX_UPLOAD_BYTES

EXPECTED_UPLOAD = "expected multipart/form-data with a PNG, JPEG or BMP in field 'file'"


class TooLargeError(PipelineError):
    """A body over its limit (HTTP 413)."""


class BodyBudget:
    """Bytes of request bodies held in memory by all requests together."""

    def __init__(self, total: int = MAX_BUFFERED_BODY_BYTES) -> None:
        self.total = total
        self.used = 0  # touched only on the event loop

    @contextlib.asynccontextmanager
    async def account(self) -> AsyncIterator[BodyAccount]:
        """An account for one request's bodies, given back when the request is done."""
        account = BodyAccount(self)
        try:
            yield account
        finally:
            self.used -= account.held


class BodyAccount:
    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        if self.budget.used + size > self.budget.total:
            raise ServerBusyError(
                f"server busy: {self.budget.total:,} bytes of uploads are being received; "
                "try again in a moment"
            )
        self.budget.used += size
        self.held += size


async def read_body(request: Request, *, limit: int, what: str, account: BodyAccount) -> bytes:
    """The whole body, refused as soon as it passes `limit` bytes (declared or streamed)."""
    too_large = f"{what}: larger than {limit:,} bytes; expected at most {limit:,}"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLargeError(too_large)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLargeError(too_large)
            account.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:  # gone, or dropped as too slow (serving/protocol.py)
        raise ClientGoneError from None
    return b"".join(chunks)


class _InMemoryMultiPart(MultiPartParser):
    # Starlette spools file parts over 1 MB to a temp file; the body is bounded, so the
    # upload can stay in memory and nothing a client sends is written to disk.
    spool_max_size = MAX_UPLOAD_BYTES


async def uploaded_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """The bytes and printable name of the multipart body's field 'file'."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = _InMemoryMultiPart(request.headers, stream(), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise PipelineError(f"upload: malformed multipart body ({err.message})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise PipelineError(f"upload: no file in field 'file'; {EXPECTED_UPLOAD}")
    name = "".join(c for c in (upload.filename or "upload") if c.isprintable())[:100]
    return await upload.read(), name or "upload"


def digit_from_pixels(pixels: list[int]) -> np.ndarray:
    """784 validated values 0-255, row by row -> uint8 (28, 28), used as they are."""
    return np.asarray(pixels, dtype=np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
