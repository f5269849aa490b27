"""Processes for bench/gpu_verify.py: the training worker, and running processes side by
side with a time limit and a planned kill -9.

Every training process runs `python bench/gpu_verify.py --worker SPEC` (`worker_main`),
which calls the train stage's own `mnist_pipeline.training.run.run`, without the DVCLive log
(DVCLive is not installed on the GPU machine), and writes what it saw to a JSON file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpu_common import ROOT, summarize_warnings, warning_record

VERIFY = ROOT / "bench" / "gpu_verify.py"


def worker_main(spec_path: Path) -> int:
    """One training process: `mnist_pipeline.training.run.run` on the spec, recording DDP's
    setup."""
    spec = json.loads(Path(spec_path).read_text())
    import torch
    import torch.distributed as dist

    import mnist_pipeline.training.loop as loop
    from mnist_pipeline.core.params import parse_params
    from mnist_pipeline.training import run as stage

    params = parse_params(spec["params"])
    rank = int(os.environ.get("RANK", "0"))
    seen: dict[str, Any] = {}
    real_wrap = loop.wrap_model

    def wrap(model, cluster):
        wrapped = real_wrap(model, cluster)
        ddp = isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        seen.update(
            backend=dist.get_backend() if dist.is_initialized() else None,
            world_size=cluster.world_size,
            device=str(cluster.device),
            ddp=ddp,
            device_ids=list(wrapped.device_ids or []) if ddp else None,
            broadcast_buffers=wrapped.broadcast_buffers if ddp else None,
            sync_batchnorm=sum(isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.modules()),
        )
        return wrapped

    loop.wrap_model = wrap

    def report(stats) -> None:
        if rank == 0:  # the line that the kill waits for comes after the checkpoint
            print(f"Epoch [{stats.epoch}/{stats.epochs}] {stats.train_loss:.4f}", file=sys.stderr)
            sys.stderr.flush()

    checkpoint_dir = spec.get("checkpoint_dir")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stage.run(
            train_path=Path(spec["train_path"]),
            model_path=Path(spec["model_path"]),
            live_dir=None,
            model_params=params.model,
            train_params=params.train,
            threads=params.runtime.threads,
            report=report,
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else None,
            backend=spec.get("backend"),
        )
    record = {
        "rank": rank,
        "seen": seen,
        "history": [asdict(stats) for stats in result.history],
        "warnings": summarize_warnings([warning_record(item) for item in caught]),
    }
    Path(spec["result_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(spec["result_dir"]) / f"rank{rank}.json").write_text(json.dumps(record, default=str))
    return 0


@dataclass(frozen=True)
class Finished:
    returncode: int | None
    stderr: str


def _descendants(pid: int) -> list[int]:
    children: list[int] = []
    with_tasks = Path(f"/proc/{pid}/task")
    if with_tasks.is_dir():
        for task in with_tasks.iterdir():
            with contextlib.suppress(OSError):
                children += [int(child) for child in (task / "children").read_text().split()]
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun's workers have sessions of their own)."""
    for victim in [*_descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def run_processes(
    commands: list[tuple[list[str], dict[str, str]]], *, timeout: float, kill_on: str | None = None
) -> tuple[list[Finished], str | None]:
    """Run commands side by side; kill them all once the first one's stderr has a line that
    starts with `kill_on`, or at the timeout. Returns how each ended and why they were
    killed (None if they were not)."""
    processes = [
        subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for command, env in commands
    ]
    lines: list[list[str]] = [[] for _ in processes]
    trigger = threading.Event()

    def drain(index: int, process: subprocess.Popen) -> None:
        for line in process.stderr:
            lines[index].append(line)
            if index == 0 and kill_on and line.startswith(kill_on):
                trigger.set()

    readers = [
        threading.Thread(target=drain, args=(index, process), daemon=True)
        for index, process in enumerate(processes)
    ]
    for reader in readers:
        reader.start()
    deadline, killed = time.monotonic() + timeout, None
    try:
        while any(process.poll() is None for process in processes):
            if trigger.is_set() or time.monotonic() > deadline:
                killed = (
                    "kill -9 as planned" if trigger.is_set() else f"timed out after {timeout:.0f} s"
                )
                break
            time.sleep(0.02)
    finally:  # also when the check's own time limit interrupts the wait
        if killed or any(process.poll() is None for process in processes):
            for process in processes:
                kill_tree(process.pid)
        for process in processes:
            process.wait()
    for reader in readers:
        reader.join(timeout=5)
    for process in processes:
        process.stderr.close()
    finished = [
        Finished(p.returncode, "".join(text)) for p, text in zip(processes, lines, strict=True)
    ]
    for index, done in enumerate(finished):  # into the group's log
        print(f"--- process {index} exited {done.returncode}\n{done.stderr}", file=sys.stderr)
    return finished, killed


def process_env(**extra: str) -> dict[str, str]:
    # A checkpoint after every epoch: the kill -9 checks kill runs of a few seconds, which
    # the default (one write every 10 s of training) would leave with nothing to resume.
    env = dict(os.environ) | {
        "PYTHONUNBUFFERED": "1",
        "MNIST_PIPELINE_CHECKPOINT_SECONDS": "0",
        **extra,
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(spec: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one training process."""
    return [sys.executable, str(VERIFY), "--worker", str(spec)], process_env(**env)


def pair(spec: Path) -> list[tuple[list[str], dict[str, str]]]:
    """Two ranks on the same device (LOCAL_RANK 0 for both), as torchrun would start them."""
    port = str(free_port())
    shared = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    shared |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    return [worker(spec, RANK=str(rank), **shared) for rank in (0, 1)]


def failed(finished: list[Finished], what: str) -> str | None:
    """What went wrong, from the first process that exited non-zero; None if none did."""
    for index, done in enumerate(finished):
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            last = lines[-1][:240] if lines else "no output"
            return f"{what}: process {index} exited {done.returncode}: {last}"
    return None
