"""Load on `mnist-pipeline serve`: N uploads at once, from N threads, on 127.0.0.1.

    python bench/serve_load.py [--uploads 200] [--kind page|hostile|largest] [--threads 1]

Starts `python -m mnist_pipeline serve` on a free loopback port with an untrained default
mlp (inference costs the same as a trained one), waits for /health, then sends --uploads
POST /predict uploads at once, each on its own connection. `page` is a 280x280 PNG like
the drawing page sends; `hostile` is a 63 KiB RGBA PNG of 4096x4096 pixels (67 MB when
decoded); `largest` is a 49-megapixel palette PNG with transparency (~47 KiB), the
costliest image the limits let through. Prints requests/s (all answers, 503s included,
and the 200s alone), p50/p99 latency, the answers' statuses, and the server's resident
memory: idle, peak (VmHWM) and 3 s after the burst, from /proc/<pid>/status.
Linux only; the request loop is bounded (one request per thread, 120 s timeout each).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def page_png() -> bytes:
    """A dark 7 on white, 280x280, as the drawing page sends it."""
    image = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(image).line([(75, 65), (205, 65), (125, 225)], fill="black", width=18)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def hostile_png(side: int = 4096) -> bytes:
    """RGBA, fully transparent: for 4096x4096 ~63 KiB on the wire, 67 MB decoded."""
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (0, 0, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def largest_png() -> bytes:
    """7000x7000 palette PNG with a transparent colour: 49 MP, just under the pixel limit,
    and the costliest mode to decode (9.3 bytes per pixel at the peak): ~47 KiB."""
    image = Image.new("P", (7000, 7000), 0)
    image.putpalette([0, 0, 0, 255, 255, 255] * 128)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    return buffer.getvalue()


def multipart(data: bytes, name: str, *, part_type: str = "image/png") -> tuple[bytes, str]:
    """A multipart/form-data body with `data` in field 'file', and its boundary."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: {part_type}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, threads: int) -> tuple[subprocess.Popen, int]:
    from mnist_pipeline.core.params import ModelParams
    from mnist_pipeline.model.model_file import save_model
    from mnist_pipeline.model.networks import build_model

    # params.yaml's default network
    config = ModelParams(arch="mlp", hidden=[392, 196, 98], dropout=0.2, channels=[])
    save_model(build_model(config), config, folder / "model.safetensors")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"]["threads"] = threads
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    command = [sys.executable, "-m", "mnist_pipeline", "serve", "--port", str(port),
               "--model", str(folder / "model.safetensors"), "--params",
               str(folder / "params.yaml"), "--metrics", str(folder / "none.json"),
               "--lock", str(folder / "none.lock")]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server, port
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    server.kill()
    raise SystemExit("serve did not start")


def post(port: int, body: bytes, boundary: str) -> tuple[int, float]:
    """One upload on a fresh connection: (status or 0 for no answer, seconds)."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/predict", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - start


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--kind", choices=["page", "hostile", "largest"], default="hostile")
    parser.add_argument("--threads", type=int, default=1, help="runtime.threads of serve")
    args = parser.parse_args()
    data = {"page": page_png, "hostile": hostile_png, "largest": largest_png}[args.kind]()
    body, boundary = multipart(data, f"{args.kind}.png")
    with tempfile.TemporaryDirectory() as folder:
        server, port = start_server(Path(folder), args.threads)
        try:
            idle = memory_kib(server.pid)["VmRSS"]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.uploads) as pool:
                results = list(pool.map(lambda _: post(port, body, boundary),
                                        range(args.uploads)))  # fmt: skip
            seconds = time.perf_counter() - start
            time.sleep(3)
            after = memory_kib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    latencies = [latency for _, latency in results]
    statuses = collections.Counter(status for status, _ in results)
    print(f"{args.uploads} concurrent uploads of {args.kind}.png ({len(data) / 1024:.0f} KiB), "
          f"serve with runtime.threads={args.threads}, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"statuses: {dict(sorted(statuses.items()))} (0: no answer)")
    print(f"requests/s: {args.uploads / seconds:.1f} answered ({statuses[200] / seconds:.1f} "
          f"of them 200), {seconds:.2f} s in all")  # fmt: skip
    print(f"latency p50: {percentile(latencies, 0.5) * 1000:.0f} ms, "
          f"p99: {percentile(latencies, 0.99) * 1000:.0f} ms")  # fmt: skip
    print(f"server RSS: idle {idle / 1024:.0f} MiB, peak {after['VmHWM'] / 1024:.0f} MiB, "
          f"3 s after {after['VmRSS'] / 1024:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
