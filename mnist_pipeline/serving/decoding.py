"""Uploaded images -> digits, bounded in CPU, memory and time, off the event loop.

Decodes run on DECODE_WORKERS threads of their own (not Starlette's 40-thread pool, which
would let 40 hostile images decode at once); at most DECODE_QUEUE more wait, and a 503
answers the rest at once. Decodes share a memory budget estimated from each header, each
has DECODE_SECONDS once it starts, and one whose client has gone stops at the decoder's
next read (mnist_pipeline/formats/image_bounds.py): nobody is left waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats.image_bounds import ImageLimitError
from mnist_pipeline.serving.limits import (
    DECODE_BYTES_PER_PIXEL,
    DECODE_MEMORY_BYTES,
    DECODE_QUEUE,
    DECODE_SECONDS,
    DECODE_WORKERS,
)


class ServerBusyError(PipelineError):
    """Too much work queued already (HTTP 503, try again shortly)."""


class ClientGoneError(Exception):
    """The client disconnected: stop, nobody reads the answer (not a PipelineError)."""


class Decoder:
    """At most `workers` decodes at once and `queue` waiting; see the module's docstring."""

    def __init__(
        self,
        *,
        workers: int = DECODE_WORKERS,
        queue: int = DECODE_QUEUE,
        memory_bytes: int = DECODE_MEMORY_BYTES,
        seconds: float = DECODE_SECONDS,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        self._capacity = workers + queue
        self._admitted = 0  # running or waiting; touched only on the event loop
        self._memory = _MemoryBudget(memory_bytes)
        self._seconds = seconds

    async def digit(self, data: bytes, name: str, *, gone: threading.Event) -> np.ndarray:
        """The upload's digit, uint8 (28, 28), as `predict` reads image files.

        ServerBusyError when the queue is full; ClientGoneError once `gone` is set.
        """
        from mnist_pipeline.formats.images import image_pixels, read_image_bytes

        if self._admitted >= self._capacity:
            raise ServerBusyError(
                f"server busy: {self._capacity} image uploads are being decoded or waiting; "
                "try again in a moment"
            )

        def check_gone() -> None:
            if gone.is_set():
                raise ClientGoneError

        def decode() -> np.ndarray:  # on a decode thread
            check_gone()  # it may have left while queued
            pixels = image_pixels(data, name)  # the header's bounds, nothing decoded
            with self._memory.hold(pixels * DECODE_BYTES_PER_PIXEL, check_gone):
                deadline = time.monotonic() + self._seconds

                def check() -> None:
                    check_gone()
                    if time.monotonic() > deadline:
                        raise ImageLimitError(
                            f"{name}: decoding took longer than {self._seconds:.0f} s; "
                            "expected an image that decodes within that"
                        )

                return read_image_bytes(data, name, check=check)

        self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, decode)
        finally:
            self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _MemoryBudget:
    """Bytes that decodes may hold together; one decode always gets in when alone."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, wanted: int, check: Callable[[], None]) -> Iterator[None]:
        wanted = min(wanted, self._total)
        with self._changed:
            while self._used and self._used + wanted > self._total:
                self._changed.wait(timeout=0.1)
                check()  # a waiting decode whose client left gives up its place
            self._used += wanted
        try:
            yield
        finally:
            with self._changed:
                self._used -= wanted
                self._changed.notify_all()
