"""GPU verification: one command that checks the CUDA, bf16 and distributed code paths and
prints a PASS/FAIL verdict that needs no second run.

    python3 bench/gpu_verify.py --out DIR                 # on a GPU machine: <= 5 minutes
    python3 bench/gpu_verify.py --out DIR --device cpu    # a smoke run of the same code

docs/gpu.md has the exact recipe for a GPU machine without network (wheels, data, time).
The checks run in groups, each in a child process with a time limit (a hang or a crash
costs one group, never the verdict), in this order:

  train     environment; default and best recipes in fp32 and bf16 (accuracy, images/s,
            peak memory, dtypes of layers, loss and weights, GPU vs CPU predictions);
            host syncs per step; same bytes twice; resume from a checkpoint in-process
  torchrun  torchrun --nproc_per_node=1 over nccl gives the one-process model
  kill9     a run killed with kill -9 and run again gives the uninterrupted model
  ddp       2 ranks sharing the GPU over gloo: DDP with device_ids, SyncBatchNorm, the
            broadcasts of a resume, and resume after kill -9
  serving   ONNX export and the served model on the GPU (when mnist_pipeline.serving exists)

It writes DIR/log.txt (everything), DIR/results.jsonl (one line per check, as it ends),
DIR/summary.json and DIR/table.md (rewritten after every group). Exit status 0 only if
every check passed (a SKIP is not a failure).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gpu_common
from gpu_common import DEFAULT_DATA, FAIL, PASS, RESULTS_FILE, SKIP

# Group -> the seconds it may take at most on a GPU. Listed by priority: the groups
# that come first get the budget first.
GROUPS = {
    "train": 150,
    "torchrun": 60,
    "kill9": 75,
    "ddp": 110,
    "serving": 20,
}
UNVERIFIED = [
    "nccl between 2+ GPUs: DDP's gradient sums and SyncBatchNorm over nccl (one GPU here, "
    "and nccl refuses 2 ranks on one GPU: the 2-rank check runs them over gloo)",
    "multi-node torchrun: rendezvous across machines and a checkpoint folder rank 0 writes",
    "other GPU models and torch/CUDA versions (a checkpoint made on one is refused on another)",
    "throughput and accuracy at full MNIST scale (these are 1,000- to 4,000-image runs)",
]
RESERVE_SECONDS = 5  # kept back to write the summary


def checks_of(group: str) -> list[str]:
    if group == "train":
        from gpu_checks import CHECKS

        return CHECKS
    if group == "serving":
        return ["ONNX export and served model on GPU"]
    from gpu_processes import CHECKS

    return CHECKS[group]


def serving_check(out: Path) -> None:
    """Skipped, with the reason: there is no GPU path in serving to check."""
    recorder = gpu_common.Recorder(out, "serving", time.monotonic() + 10)
    name = checks_of("serving")[0]
    if not (gpu_common.ROOT / "stages" / "serving").exists():
        why = "not landed: no mnist_pipeline/serving in this checkout"
    else:  # a file check: an editable install elsewhere may provide mnist_pipeline.serving
        why = (
            "mnist_pipeline/serving predicted on the CPU only and its ONNX export needs onnx "
            "(not on the GPU machine) when this script was written: no GPU path to check"
        )
    recorder.write(name, SKIP, why, {}, [], 0)


def run_group(group: str, args: argparse.Namespace, timeout: float, log) -> str | None:
    """Run a group in a child process; None if it ended by itself, else what went wrong."""
    command = [sys.executable, str(Path(__file__).resolve()), "--group", group]
    command += ["--out", str(args.out), "--device", args.device, "--size", args.size]
    command += ["--data", str(args.data), "--group-seconds", f"{timeout - 3:.0f}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True, env=env)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        from gpu_launch import kill_tree

        kill_tree(process.pid)
        process.wait()
        return f"timed out after {timeout:.0f} s"
    return None if code == 0 else f"exited with status {code} (see log.txt)"


def read_results(out: Path) -> list[dict]:
    path = out / RESULTS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:  # a line cut short by a kill is dropped; its check then counts as not run
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows.append(row | {"metrics": row.get("metrics") or {}, "alerts": row.get("alerts", 0)})
    return rows


def compose(results: list[dict], planned: dict[str, str | None], args, elapsed: float) -> dict:
    """The summary: every planned check once, with FAIL for those that never reported."""
    rows, seen = [], {(row["group"], row["check"]) for row in results}
    for row in results:
        rows.append(row)
    for group, why in planned.items():
        for name in checks_of(group):
            if (group, name) not in seen and why is not None:
                rows.append(
                    {
                        "group": group,
                        "check": name,
                        "status": FAIL,
                        "detail": f"not run: {why}",
                        "alerts": 0,
                        "warnings": [],
                    }
                )
    alerts = sum(row.get("alerts", 0) for row in rows)
    ran = [row for row in rows if row["group"] == "train" and row["status"] != FAIL]
    rows.append(
        {
            "group": "all",
            "check": "determinism alerts (warn_only)",
            "alerts": alerts,
            "status": PASS if alerts == 0 and ran else FAIL,
            "warnings": [],
            "detail": f"{alerts} alert(s) in the checks that ran; 0 means warn_only=False is safe",
        }
    )
    failed = [row for row in rows if row["status"] == FAIL]
    return {
        "verdict": PASS if not failed and planned else FAIL,
        "device": args.device,
        "size": args.size,
        "budget_seconds": args.budget_seconds,
        "elapsed_seconds": round(elapsed, 1),
        "checks": rows,
        "warnings": gpu_common.summarize_warnings([w for r in rows for w in r.get("warnings", [])]),
        "unverified": UNVERIFIED,
    }


def table(summary: dict) -> str:
    lines = ["| group | check | verdict | detail |", "|---|---|---|---|"]
    for row in summary["checks"]:
        detail = str(row["detail"]).replace("|", "/")
        lines.append(f"| {row['group']} | {row['check']} | {row['status']} | {detail} |")
    lines += [
        "",
        f"verdict: {summary['verdict']} ({summary['elapsed_seconds']} s of "
        f"{summary['budget_seconds']} s, device {summary['device']}, {summary['size']} sizes)",
    ]
    lines += ["", "not verified by this run:", *[f"- {item}" for item in summary["unverified"]]]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, summary: dict) -> None:
    for name, text in [
        ("summary.json", json.dumps(summary, indent=2, default=str)),
        ("table.md", table(summary)),
    ]:
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def orchestrate(args: argparse.Namespace) -> int:
    started = time.monotonic()
    deadline = started + args.budget_seconds
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / RESULTS_FILE).unlink(missing_ok=True)
    planned: dict[str, str | None] = {}
    scale = 1.0 if args.size == "full" else 3.0  # CPU smoke runs are slower per image
    with (args.out / "log.txt").open("a", buffering=1) as log:
        print(f"gpu_verify: device {args.device}, budget {args.budget_seconds} s", file=log)
        for group in args.only:
            left = deadline - time.monotonic() - RESERVE_SECONDS
            try:
                if group == "serving":
                    serving_check(args.out)
                    planned[group] = None
                elif left < 10:
                    planned[group] = f"the --budget-seconds {args.budget_seconds} were spent"
                else:
                    log.flush()
                    timeout = min(GROUPS[group] * scale, left)
                    planned[group] = run_group(group, args, timeout, log)
            except Exception as err:  # e.g. no child process could start: say so, go on
                planned[group] = f"could not run the group: {gpu_common.first_line(err)}"
            if group == "train" and _no_gpu(args.out):
                for rest in args.only[args.only.index(group) + 1 :]:
                    planned[rest] = "no CUDA GPU (see environment)"
                break
            summary = compose(read_results(args.out), planned, args, time.monotonic() - started)
            write_summary(args.out, summary)
            print(f"[{group}] done after {time.monotonic() - started:.0f} s", flush=True)
    summary = compose(read_results(args.out), planned, args, time.monotonic() - started)
    write_summary(args.out, summary)
    print(table(summary), flush=True)
    return 0 if summary["verdict"] == PASS else 1


def _no_gpu(out: Path) -> bool:
    return any(
        row["check"] == "environment" and row["metrics"].get("cuda_available") is False
        for row in read_results(out)
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for log.txt, summary.json, table.md")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--budget-seconds", type=float, default=300, help="for all checks")
    parser.add_argument(
        "--size",
        choices=["full", "small"],
        default=None,
        help="how much to train (default: full on cuda, small on cpu)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared digits")
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    parser.add_argument("--group", help=argparse.SUPPRESS)  # internal: run one group
    parser.add_argument("--group-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # one training process
    args = parser.parse_args(argv)
    args.size = args.size or ("full" if args.device == "cuda" else "small")
    args.only = [group for group in args.only.split(",") if group]
    unknown = sorted(set(args.only) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {unknown}; expected some of {list(GROUPS)}")
    if args.out is None and args.worker is None:
        parser.error("--out is required")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        from gpu_launch import worker_main

        return worker_main(args.worker)
    if args.group is not None:
        deadline = time.monotonic() + args.group_seconds
        if args.group == "train":
            from gpu_checks import main as train_main

            return train_main(args.out, args.device, args.size, args.data, deadline)
        from gpu_processes import main as processes_main

        return processes_main(args.group, args.out, args.device, args.size, args.data, deadline)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
