"""Scoring speed against the arithmetic: images/s, peak memory and the FLOP bound of
`mnist-pipeline predict` for the default, `fast` and `best` models, and `serve` latency.

    bench/reference_cpu.sh python bench/predict_throughput.py            # the reference CPU
    bench/reference_cpu.sh python bench/predict_throughput.py --images 2000 --requests 50

Each model is trained for one epoch only: what scoring costs doesn't depend on how well
the weights were trained. For each, the real command (`python -m mnist_pipeline predict`,
start-up included) is timed on `--images` digits with its peak RSS, and the scoring alone
(`class_probabilities`, in this process, best of `--repeats`) is set against its FLOP
bound: forward FLOPs per image (torch's FlopCounterMode, every member and test-time
shift) x images / the peak of `--threads` AVX2 cores, each doing 2 FMA x 8 fp32 x 2 FLOP
per cycle at `--clock-ghz` (default: /proc/cpuinfo's MHz). Then `serve` runs the `best`
model as a subprocess on 127.0.0.1, and p50 and p99 of `--requests` POST /predict
requests of one digit (JSON pixels) are reported. The machine, its ISA caps, the
precision, load average and date are printed first: on a shared machine, rerun short.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
AVX2_FLOP_PER_CYCLE = 2 * 8 * 2  # per core: 2 FMA units x 8 fp32 lanes x 2 FLOP per FMA


def machine_lines(threads: int) -> list[str]:
    import torch

    from mnist_pipeline.training.cpu_bf16 import native_bf16

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown",
    )  # fmt: skip
    caps = " ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in CAP_VARIABLES)
    return [
        f"CPU: {cpu}; {os.cpu_count()} CPUs seen, torch threads {threads}",
        f"ISA caps: {caps}; torch's kernels: {torch.backends.cpu.get_cpu_capability()}",
        f"precision: fp32 (native bf16 usable: {native_bf16()})",
        f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
        f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}",
    ]


def clock_ghz() -> float:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) / 1000
    return 3.0


def train_one_epoch(name: str, train_digits, model_path: Path):
    """The recipe's model after one epoch (the architecture is what matters here)."""
    from compare_recipes import recipe_params

    from mnist_pipeline.core.recipes import RECIPE_DIR, recipe_overrides
    from mnist_pipeline.model.model_file import save_model
    from mnist_pipeline.training.loop import train_model

    recipe = recipe_overrides(name, folder=ROOT / RECIPE_DIR)  # conf/recipe/<name>.yaml
    overrides = recipe | {"train.epochs": 1, "train.precision": "fp32"}
    params = recipe_params(overrides)
    result = train_model(train_digits, params.model, params.train, params.runtime.threads)
    save_model(result.model, result.config, model_path)
    return result.model, params


def forward_flops_per_image(model) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mnist_pipeline.model.networks import scale_pixels

    images = torch.zeros(16, 1, 28, 28, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.eval()(scale_pixels(images))
    return counter.get_total_flops() // len(images)


def params_with_threads(folder: Path, threads: int) -> Path:
    """params.yaml with `runtime.threads` set to the bench's thread count."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["runtime"]["threads"] = threads
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# Runs `python -m mnist_pipeline ARGS...` and writes its own peak RSS (VmHWM, kB) at exit
# to the file named by $PEAK_RSS_FILE. wait4's ru_maxrss would also count the memory of
# this bench process, which the child shares until it execs.
_WITH_PEAK_RSS = (
    "import atexit, os, runpy, sys\n"
    "def peak():\n"
    "    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "    open(os.environ['PEAK_RSS_FILE'], 'w').write(status)\n"
    "atexit.register(peak)\n"
    "sys.argv = ['mnist_pipeline', *sys.argv[1:]]\n"
    "runpy.run_module('mnist_pipeline', run_name='__main__', alter_sys=True)\n"
)


def run_predict_command(
    model_path: Path, input_csv: Path, output_csv: Path, params: Path
) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `python -m mnist_pipeline predict`."""
    arguments = ["predict", "--model", str(model_path), "--input", str(input_csv),
                 "--output", str(output_csv), "--params", str(params)]  # fmt: skip
    peak_file = output_csv.with_suffix(".peak")
    environment = os.environ | {"PEAK_RSS_FILE": str(peak_file)}
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", _WITH_PEAK_RSS, *arguments],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    wall = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"error: predict {' '.join(arguments)} failed: {finished.stderr.decode()}")
    return wall, int(peak_file.read_text()) * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_latencies(
    model_path: Path, digit: np.ndarray, requests: int, params: Path
) -> tuple[list[float], float]:
    """Seconds of each POST /predict of one digit to a real `serve` subprocess, and the
    server's CPU seconds per request (which a busy machine doesn't inflate much)."""
    port = free_port()
    command = [sys.executable, "-m", "mnist_pipeline", "serve", "--model", str(model_path),
               "--port", str(port), "--host", "127.0.0.1", "--params", str(params)]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to 60 s to start (torch import on a busy machine)
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        body = json.dumps({"pixels": digit.ravel().tolist()}).encode()
        headers = {"Content-Type": "application/json"}
        times = []
        cpu_before = 0.0
        for index in range(requests + 5):  # 5 warm-up requests, not counted
            if index == 5:
                cpu_before = _cpu_seconds(server.pid)
            request = urllib.request.Request(f"{base}/predict", body, headers, method="POST")
            started = time.perf_counter()
            urllib.request.urlopen(request, timeout=60).read()
            if index >= 5:
                times.append(time.perf_counter() - started)
        return times, (_cpu_seconds(server.pid) - cpu_before) / requests
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="digits to score")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads, also runtime.threads of the commands"
    )
    parser.add_argument("--clock-ghz", type=float, default=None, help="for the FLOP bound")
    parser.add_argument("--repeats", type=int, default=2, help="timed scorings, best kept")
    parser.add_argument("--requests", type=int, default=200, help="serve requests")
    parser.add_argument("--models", default="default,fast,best")
    args = parser.parse_args()

    from mnist_pipeline.core.kernels import pin_portable_kernels

    pin_portable_kernels()  # as `mnist-pipeline predict` does, before torch loads
    import torch

    from mnist_pipeline.core.digits import Digits
    from mnist_pipeline.data.split import load_bundled_digits
    from mnist_pipeline.formats.csv_digits import write_csv_digits
    from mnist_pipeline.model.inference import prepare_for_inference
    from mnist_pipeline.model.predict import class_probabilities

    torch.set_num_threads(args.threads)
    clock = args.clock_ghz or clock_ghz()
    peak = args.threads * AVX2_FLOP_PER_CYCLE * clock * 1e9
    for line in machine_lines(args.threads):
        print(line)
    print(f"FLOP bound: {args.threads} cores x 2 FMA x 8 fp32 x 2 x {clock:.2f} GHz "
          f"= {peak / 1e9:.0f} GFLOP/s (AVX2 fp32)\n")  # fmt: skip

    bundled = load_bundled_digits()
    assert bundled.labels is not None  # the bundled digits are labelled
    picks = np.arange(args.images) % len(bundled.images)  # repeated if fewer are bundled
    digits = Digits(bundled.images[picks], bundled.labels[picks])
    train = Digits(bundled.images[:1000], bundled.labels[:1000])
    rows = []
    best_path = None
    with tempfile.TemporaryDirectory() as tmp:
        input_csv = Path(tmp, "digits.csv")
        params_file = params_with_threads(Path(tmp), args.threads)
        write_csv_digits(input_csv, digits)
        for name in args.models.split(","):
            model_path = Path(tmp, f"{name}.safetensors")
            model, _ = train_one_epoch(name, train, model_path)
            torch.set_num_threads(args.threads)  # training set its own thread count
            flops = forward_flops_per_image(model)
            prepared = prepare_for_inference(model)
            class_probabilities(prepared, digits.images[:64])  # warm-up
            scoring = []  # (wall, CPU) seconds: on a shared machine CPU time shows the
            for _ in range(args.repeats):  # efficiency that wall time hides
                started, cpu_started = time.perf_counter(), time.process_time()
                class_probabilities(prepared, digits.images)
                scoring.append((time.perf_counter() - started, time.process_time() - cpu_started))
            scored, cpu = min(scoring)
            bound = flops * args.images / peak
            wall, rss = run_predict_command(
                model_path, input_csv, Path(tmp, f"{name}.csv"), params_file
            )
            rows.append((name, flops, scored, cpu, bound, wall, rss))
            if name == "best":
                best_path = model_path
            print(f"{name}: scored in {scored:.2f} s ({cpu:.2f} CPU s; bound {bound:.2f} s); "
                  f"command {wall:.1f} s, peak RSS {rss / 2**20:.0f} MiB", flush=True)  # fmt: skip
        print(f"\n{args.images:,} digits, {args.threads} threads\n")
        print("| model | forward MFLOP/image | scoring s | CPU s | images/s | FLOP bound s "
              "| x bound | GFLOP per CPU s | `predict` command s | peak RSS MiB |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, flops, scored, cpu, bound, wall, rss in rows:
            work = flops * args.images
            print(f"| {name} | {flops / 1e6:.1f} | {scored:.2f} | {cpu:.2f} "
                  f"| {args.images / scored:,.0f} | {bound:.2f} | {scored / bound:.2f} "
                  f"| {work / cpu / 1e9:.0f} | {wall:.1f} | {rss / 2**20:.0f} |")  # fmt: skip
        if best_path is not None and args.requests > 0:
            latencies, cpu = serve_latencies(
                best_path, digits.images[0], args.requests, params_file
            )
            times = np.array(latencies)
            print(f"\nserve, best model, {args.requests} requests of one digit: "
                  f"p50 {1e3 * np.percentile(times, 50):.1f} ms, "
                  f"p99 {1e3 * np.percentile(times, 99):.1f} ms; "
                  f"server CPU {1e3 * cpu:.1f} ms per request")  # fmt: skip
    print(f"\nload average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
