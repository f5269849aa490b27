"""bench/gpu_verify.py's checks that need processes of their own: resume after a real
kill -9, torchrun over nccl, and two ranks sharing one GPU over gloo (DDP, SyncBatchNorm).
The training processes are bench/gpu_launch.py's workers.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_common import (
    FAIL,
    PASS,
    SIZES,
    CheckResult,
    Recorder,
    load_digits,
    raw_params,
    recipe_overrides,
    split,
)
from gpu_launch import VERIFY, failed, pair, process_env, run_processes, worker

CHECKS = {
    "kill9": ["resume after kill -9"],
    "torchrun": ["torchrun --nproc_per_node=1"],
    "ddp": ["2 ranks on one device over gloo: DDP", "2 ranks over gloo: resume after kill -9"],
}


@dataclass
class Work:
    """A group's folder, device and sizes; writes the data and the worker specs."""

    folder: Path
    device: str
    size: str
    data_path: Path

    def prepare(self, recipe: str, precision: str) -> dict[str, Any]:
        """Training and test files for the recipe, and its params (as a dict)."""
        from mnist_pipeline.core.artifacts import save_prepared

        params = raw_params(
            recipe_overrides(recipe, SIZES[self.size]), device=self.device, precision=precision
        )
        train_path = self.folder / f"{recipe}-train.safetensors"
        if not train_path.is_file():
            digits, _ = load_digits(self.data_path)
            train, test = split(digits, params["data"]["train_size"], SIZES[self.size].test)
            self.folder.mkdir(parents=True, exist_ok=True)
            save_prepared(train_path, train)
            save_prepared(self.folder / f"{recipe}-test.safetensors", test)
        return params

    def spec(self, name: str, params: dict, recipe: str, **options: Any) -> Path:
        spec = {
            "params": params,
            "train_path": str(self.folder / f"{recipe}-train.safetensors"),
            "model_path": str(self.folder / f"{name}.safetensors"),
            "result_dir": str(self.folder / f"{name}-result"),
            "checkpoint_dir": None,
            "backend": None,
        } | options
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    def result(self, name: str, rank: int = 0) -> dict[str, Any]:
        path = self.folder / f"{name}-result" / f"rank{rank}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def model(self, name: str) -> bytes | None:
        path = self.folder / f"{name}.safetensors"
        return path.read_bytes() if path.is_file() else None


def _warnings(work: Work, *names: str) -> list[dict[str, Any]]:
    return [w for name in names for w in work.result(name).get("warnings", [])]


def _kill_and_resume(work: Work, name: str, spec: Path, commands, timeout: float):
    """Kill after `kill_after` epochs, run again: (problem or None, resumed stderr)."""
    kill_after = SIZES[work.size].kill_after
    deadline = time.monotonic() + timeout
    finished, killed = run_processes(
        commands(spec), timeout=timeout, kill_on=f"Epoch [{kill_after}/"
    )
    if killed != "kill -9 as planned" or finished[0].returncode != -signal.SIGKILL:
        return f"the run to kill ended otherwise ({killed}, exit {finished[0].returncode})", ""
    if not (work.folder / f"{name}-checkpoint" / "train.pt").is_file():
        return "no checkpoint after the kill", ""
    again, killed = run_processes(commands(spec), timeout=deadline - time.monotonic())
    problem = failed(again, "the rerun") or (killed and f"the rerun {killed}")
    return problem, again[0].stderr


def check_kill9(work: Work, timeout: float) -> CheckResult:
    deadline = time.monotonic() + timeout
    precision = "bf16" if work.device == "cuda" else "fp32"
    params = work.prepare("short", precision)
    reference = work.spec("uninterrupted", params, "short")
    finished, killed = run_processes([worker(reference)], timeout=timeout / 3)
    if problem := failed(finished, "the uninterrupted run") or killed:
        return FAIL, str(problem), {}
    checkpoint_dir = str(work.folder / "killed-checkpoint")
    spec = work.spec("killed", params, "short", checkpoint_dir=checkpoint_dir)
    problem, stderr = _kill_and_resume(
        work, "killed", spec, lambda s: [worker(s)], deadline - time.monotonic()
    )
    metrics = {"extra_warnings": _warnings(work, "uninterrupted", "killed")}
    if problem:
        return FAIL, problem, metrics
    resumed = next((line for line in stderr.splitlines() if "resuming from" in line), "")
    same = work.model("killed") == work.model("uninterrupted")
    detail = f"{precision}; {resumed.split(': ')[-1] or 'did NOT resume'}; same bytes: {same}"
    return (PASS if same and resumed else FAIL), detail, metrics


def check_torchrun(work: Work, timeout: float) -> CheckResult:
    precision = "bf16" if work.device == "cuda" else "fp32"
    params = work.prepare("short", precision)
    if work.model("uninterrupted") is None:  # the kill -9 check's reference, else make it
        finished, killed = run_processes(
            [worker(work.spec("uninterrupted", params, "short"))], timeout=timeout / 2
        )
        if problem := failed(finished, "the one-process run") or killed:
            return FAIL, str(problem), {}
    spec = work.spec("torchrun", params, "short")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    finished, killed = run_processes(
        [([*command, str(VERIFY), "--worker", str(spec)], process_env())], timeout=timeout
    )
    if problem := failed(finished, "torchrun") or killed:
        return FAIL, str(problem), {}
    seen = work.result("torchrun").get("seen", {})
    wanted = "nccl" if work.device == "cuda" else "gloo"
    same = work.model("torchrun") == work.model("uninterrupted")
    detail = f"backend {seen.get('backend')}, world {seen.get('world_size')}; "
    detail += f"same bytes as one process: {same}"
    metrics = {"seen": seen, "extra_warnings": _warnings(work, "torchrun")}
    return (PASS if same and seen.get("backend") == wanted else FAIL), detail, metrics


def _accuracy(work: Work, name: str) -> float:
    from mnist_pipeline.core.artifacts import load_prepared
    from mnist_pipeline.model.model_file import load_model
    from mnist_pipeline.model.predict import class_probabilities

    model, _ = load_model(work.folder / f"{name}.safetensors")
    test = load_prepared(work.folder / "ddp-test.safetensors")
    return float((class_probabilities(model, test.images).argmax(axis=1) == test.labels).mean())


def _largest_difference(work: Work, name: str, other: str) -> float:
    from mnist_pipeline.model.model_file import load_model

    first = load_model(work.folder / f"{name}.safetensors")[0].state_dict()
    second = load_model(work.folder / f"{other}.safetensors")[0].state_dict()
    floats = [key for key, tensor in first.items() if tensor.is_floating_point()]
    return max(float((first[key] - second[key]).abs().max()) for key in floats)


def check_two_ranks(work: Work, timeout: float) -> CheckResult:
    """2 ranks vs 1 process: the same global batches, SyncBatchNorm on CUDA, so nearly the
    same model (dropout is off); DDP set up as wrap_model intends."""
    deadline = time.monotonic() + timeout
    params = work.prepare("ddp", "fp32")
    finished, killed = run_processes(
        [worker(work.spec("single", params, "ddp"))], timeout=timeout / 2
    )
    if problem := failed(finished, "the one-process run") or killed:
        return FAIL, str(problem), {}
    spec = work.spec("two", params, "ddp", backend="gloo")
    finished, killed = run_processes(pair(spec), timeout=deadline - time.monotonic())
    if problem := failed(finished, "2 ranks") or killed:
        return FAIL, str(problem), {}
    seen = work.result("two").get("seen", {})
    on_cuda = work.device == "cuda"
    expected = {"ddp": True, "backend": "gloo", "world_size": 2}
    blocks = len(params["model"]["channels"])
    if on_cuda:
        expected |= {"device_ids": [0], "broadcast_buffers": False, "sync_batchnorm": blocks}
    else:  # SyncBatchNorm needs GPU tensors: plain BN, rank 0's statistics broadcast
        expected |= {"device_ids": [], "broadcast_buffers": True, "sync_batchnorm": 0}
    wrong = {key: seen.get(key) for key, value in expected.items() if seen.get(key) != value}
    one, two = _accuracy(work, "single"), _accuracy(work, "two")
    problems = [f"DDP set up with {wrong}, expected {expected}"] if wrong else []
    # With SyncBatchNorm 2 ranks normalise over the global batch as 1 process does; on the
    # CPU each rank normalises over its shard, so the models differ more (not a failure).
    if on_cuda and abs(two - one) > 0.01:
        problems.append(f"accuracy {two:.4f} with 2 ranks is not within 0.01 of 1 process's")
    drift = _largest_difference(work, "single", "two")
    detail = (
        f"{seen.get('device')}: DDP device_ids {seen.get('device_ids')}, broadcast_buffers "
        f"{seen.get('broadcast_buffers')}, {seen.get('sync_batchnorm')} SyncBatchNorm; "
        f"accuracy {two:.4f} vs {one:.4f} with 1 process, weights within {drift:.2g}"
        + "".join(f"; {p}" for p in problems)
    )
    metrics = {"seen": seen, "accuracy_two": two, "accuracy_one": one, "max_weight_diff": drift}
    metrics["extra_warnings"] = _warnings(work, "single", "two")
    return (FAIL if problems else PASS), detail, metrics


def check_two_ranks_resume(work: Work, timeout: float) -> CheckResult:
    if work.model("two") is None:
        return FAIL, "not run: needs the 2-rank run of the check before", {}
    params = work.prepare("ddp", "fp32")
    checkpoint_dir = str(work.folder / "two-killed-checkpoint")
    spec = work.spec("two-killed", params, "ddp", backend="gloo", checkpoint_dir=checkpoint_dir)
    problem, stderr = _kill_and_resume(work, "two-killed", spec, pair, timeout)
    if problem:
        return FAIL, problem, {}
    resumed = next((line for line in stderr.splitlines() if "resuming from" in line), "")
    same = work.model("two-killed") == work.model("two")
    detail = f"{resumed.split(': ')[-1] or 'did NOT resume'}; same bytes as the 2-rank run: {same}"
    return (PASS if same and resumed else FAIL), detail, {}


def main(group: str, out: Path, device: str, size: str, data: Path, deadline: float) -> int:
    recorder = Recorder(out, group, deadline)
    work = Work(folder=out / "work" / group, device=device, size=size, data_path=data)
    if group == "torchrun":  # reuse the kill -9 check's one-process model when it is there
        work = Work(folder=out / "work" / "kill9", device=device, size=size, data_path=data)
    checks = {
        "resume after kill -9": check_kill9,
        "torchrun --nproc_per_node=1": check_torchrun,
        "2 ranks on one device over gloo: DDP": check_two_ranks,
        "2 ranks over gloo: resume after kill -9": check_two_ranks_resume,
    }
    names = CHECKS[group]
    for index, name in enumerate(names):  # the time left, shared by the checks left
        limit = (deadline - time.monotonic()) / (len(names) - index)
        recorder.run(name, limit, lambda check=checks[name], limit=limit: check(work, limit - 2))
    return 0
