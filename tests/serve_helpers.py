"""What the network tests of `serve` share: a real server on 127.0.0.1 in a thread, raw
sockets, multipart bodies, and hostile images."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI
from PIL import Image, ImageDraw

from bench.serve_load import multipart as multipart_body
from mnist_pipeline.serving.server import server_config


@contextlib.contextmanager
def running_server(app: FastAPI) -> Iterator[int]:
    """uvicorn with serve's settings (protocol, timeouts) on a free loopback port."""
    import uvicorn

    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=0))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server thread ended"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def connect(port: int, timeout: float = 30) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    connection.settimeout(timeout)
    return connection


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            received += chunk
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def multipart(data: bytes, name: str = "digit.png") -> tuple[bytes, str]:
    """A multipart/form-data body with `data` in field 'file', and its Content-Type."""
    body, boundary = multipart_body(data, name, part_type="application/octet-stream")
    return body, f"multipart/form-data; boundary={boundary}"


def upload_request(data: bytes, name: str = "digit.png", host: str = "127.0.0.1") -> bytes:
    body, content_type = multipart(data, name)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def seven_png(size: int = 200) -> bytes:
    """A dark 7 on light paper."""
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).line([(50, 40), (150, 40), (90, 170)], fill="black", width=14)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def many_scan_jpeg(side: int, scans: int) -> bytes:
    """A progressive JPEG of one flat colour whose smallest scan is repeated until the file
    has `scans` scans: a few bytes each, yet each one decodes the whole image again."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, format="JPEG", progressive=True)
    data = buffer.getvalue()
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    ends = [*starts[1:], len(data) - 2]  # the last scan ends at EOI
    smallest = min((data[a:b] for a, b in zip(starts, ends, strict=True)), key=len)
    extra = scans - len(starts)
    assert extra >= 0, f"a progressive JPEG already has {len(starts)} scans"
    return data[:-2] + smallest * extra + data[-2:]
