"""Running the app: uvicorn with the guarded protocol and the limits of serving/limits.py."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING

from fastapi import FastAPI

from mnist_pipeline.serving.limits import KEEP_ALIVE_S

if TYPE_CHECKING:
    import uvicorn

# glibc's mallopt(M_MMAP_THRESHOLD): blocks from this size up are mmapped, so freeing
# them gives the memory back to the system at once.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 1024 * 1024


def run_server(app: FastAPI, *, host: str, port: int) -> None:
    """Serve until Ctrl+C, with the allocator told to give freed memory back."""
    import uvicorn

    return_freed_memory()
    uvicorn.Server(server_config(app, host=host, port=port)).run()


def server_config(app: FastAPI, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings: the guarded protocol (serving/protocol.py), its keep-alive
    timeout, and no `limit_concurrency`: uvicorn counts open connections there, idle ones
    included (guards.py counts requests instead)."""
    import uvicorn

    from mnist_pipeline.serving.protocol import GuardedH11Protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=GuardedH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=None,
        log_level="warning",
    )


def return_freed_memory() -> None:
    """Make the C allocator hand large freed blocks straight back to the system.

    glibc raises its mmap threshold each time a large block is freed, so later image
    buffers (Pillow allocates 16 MB blocks) come from the heap and stay resident after
    they are freed: one 4096x4096 RGBA decode left 84 MB resident, 4 MB with a fixed
    1 MiB threshold. Called by `serve` only (a process-wide setting); a no-op off glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
