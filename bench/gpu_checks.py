"""bench/gpu_verify.py's in-process checks: environment, recipes in fp32 and bf16, host
syncs per step, same bytes twice, resume from a checkpoint. All call the train stage's
own `train_model`, in one process (the group `train`)."""

from __future__ import annotations

import copy
import io
import math
import platform
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_common import (
    FAIL,
    PASS,
    SIZES,
    SKIP,
    SYNC_MARKER,
    CheckResult,
    Recorder,
    load_digits,
    model_bytes,
    raw_params,
    recipe_overrides,
    split,
    warning_record,
)
from gpu_probes import DtypeProbe, exact_fp32, flag, importable, temporary_file

RECIPES = ("default", "best")
PRECISIONS = ("fp32", "bf16")
CHECKS = [
    "environment",
    *[f"recipe {recipe} {precision}" for recipe in RECIPES for precision in PRECISIONS],
    "host syncs per step",
    *[f"same bytes twice {precision}" for precision in PRECISIONS],
    *[f"resume in-process {precision}" for precision in PRECISIONS],
]
AGREEMENT = 0.999  # GPU predictions vs the saved model's CPU predictions


@dataclass
class Context:
    device: str  # "cuda" or "cpu"
    size: str
    data_path: Path
    digits: Any = None
    source: str = ""
    models: dict[tuple[str, str], bytes] = field(default_factory=dict)  # first runs' bytes
    checkpoints: dict[str, list[bytes]] = field(default_factory=dict)  # best, per precision

    @property
    def sizes(self):
        return SIZES[self.size]

    def params(self, recipe: str, **extra: Any):
        from mnist_pipeline.core.params import parse_params

        overrides = recipe_overrides(recipe, self.sizes) | extra
        # bf16 is passed to train_model itself (on the CPU, a smoke run's bf16 is CPU autocast,
        # which params refuse): params keep fp32.
        return parse_params(raw_params(overrides, device=self.device, precision="fp32"))

    def data(self, params):
        return split(self.digits, params.data.train_size, self.sizes.test)


def run_group(recorder: Recorder, context: Context) -> None:
    environment = recorder.run("environment", 60, lambda: check_environment(context))
    if environment[0] != PASS:
        for name in CHECKS[1:]:
            recorder.write(name, FAIL, "not run: the environment check failed", {}, [], 0)
        return
    for recipe in RECIPES:
        for precision in PRECISIONS:
            recorder.run(
                f"recipe {recipe} {precision}",
                90,
                lambda r=recipe, p=precision: check_recipe(context, r, p),
            )
    recorder.run("host syncs per step", 90, lambda: check_host_syncs(context))
    for precision in PRECISIONS:
        recorder.run(
            f"same bytes twice {precision}", 120, lambda p=precision: check_same_bytes(context, p)
        )
    for precision in PRECISIONS:
        recorder.run(
            f"resume in-process {precision}", 90, lambda p=precision: check_resume(context, p)
        )


def check_environment(context: Context) -> CheckResult:
    import torch

    from mnist_pipeline.training.runtime import CUBLAS_DETERMINISTIC_WORKSPACE

    context.digits, context.source = load_digits(context.data_path)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cuda_build": torch.version.cuda,
        "data": f"{context.source}: {len(context.digits.images)} images",
        "missing": [name for name in ("dvc", "dvclive", "mlxtend") if not importable(name)],
    }
    if context.device == "cpu":
        info["device"] = "cpu (smoke run: nothing here is GPU-verified)"
        return PASS, f"torch {torch.__version__}, python {info['python']}; CPU smoke run", info
    if not torch.cuda.is_available():
        info["cuda_available"] = False
        return FAIL, f"no CUDA GPU visible to torch {torch.__version__}", info
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    info |= {  # each read on its own: an odd field must not fail the whole check
        "gpu": flag(lambda: torch.cuda.get_device_name(0)),
        "gpus_visible": flag(torch.cuda.device_count),
        "capability": flag(lambda: ".".join(map(str, torch.cuda.get_device_capability(0)))),
        "memory_gib": flag(lambda: round(torch.cuda.get_device_properties(0).total_memory / 2**30)),
        "cudnn": flag(torch.backends.cudnn.version),
        "nccl": flag(lambda: ".".join(map(str, torch.cuda.nccl.version()))),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "tf32_matmul": flag(lambda: torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": flag(lambda: torch.backends.cudnn.allow_tf32),  # convs: True by default
        "float32_matmul_precision": flag(torch.get_float32_matmul_precision),
    }
    detail = (
        f"{info['gpu']} (sm {info['capability']}, {info['memory_gib']} GiB), torch "
        f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {info['cudnn']}, NCCL "
        f"{info['nccl']}; bf16 {info['bf16_supported']}; TF32 matmul "
        f"{info['tf32_matmul']}, conv {info['tf32_cudnn']}; {info['data']}"
    )
    return (PASS if info["bf16_supported"] else FAIL), detail, info


def _train(context: Context, params, train, precision: str, **kwargs):
    from mnist_pipeline.training.loop import train_model

    return train_model(
        train,
        params.model,
        params.train,
        params.runtime.threads,
        bf16=precision == "bf16",
        **kwargs,
    )


def check_recipe(context: Context, recipe: str, precision: str) -> CheckResult:
    import torch

    from mnist_pipeline.model.model_file import load_model
    from mnist_pipeline.model.networks import scale_pixels
    from mnist_pipeline.model.predict import class_probabilities

    params = context.params(recipe)
    train, test = context.data(params)
    on_cuda = context.device == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    probe = DtypeProbe()
    started = time.perf_counter()
    with probe.watching():
        result = _train(context, params, train, precision)
    seconds = time.perf_counter() - started
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if on_cuda else None
    context.models[(recipe, precision)] = saved = model_bytes(result.model, result.config)
    with temporary_file(saved) as path:
        cpu_model, _ = load_model(path)  # as `predict` loads it, on the CPU
    cpu_predicted = class_probabilities(cpu_model, test.images).argmax(axis=1)
    device_model = copy.deepcopy(result.model).to(context.device).eval()
    images = scale_pixels(torch.from_numpy(test.images)).to(context.device)
    with torch.inference_mode():
        device_predicted = device_model(images).argmax(dim=1).cpu().numpy()
        with exact_fp32(on_cuda):  # how much of any disagreement TF32 convs cause
            exact_predicted = device_model(images).argmax(dim=1).cpu().numpy()
    agreement = float((device_predicted == cpu_predicted).mean())
    accuracy = float((cpu_predicted == test.labels).mean())
    history = result.history
    later = [stats.seconds for stats in history[1:]] or [history[0].seconds]
    n_train = len(train.images) - params.train.val_size
    state = result.model.state_dict().values()
    weights = {str(t.dtype).removeprefix("torch.") for t in state if t.is_floating_point()}
    wanted = "bfloat16" if precision == "bf16" else "float32"
    problems = []
    if probe.compute != {wanted}:
        problems.append(f"layers computed in {sorted(probe.compute)}, expected {wanted}")
    if probe.loss != {"float32"}:
        problems.append(f"loss in {sorted(probe.loss)}, expected float32")
    if weights != {"float32"}:
        problems.append(f"weights in {sorted(weights)}, expected float32")
    if agreement < AGREEMENT:
        problems.append(f"{context.device} and CPU predictions agree on {agreement:.4f} only")
    losses = [stats.train_loss for stats in history]
    if not (all(math.isfinite(value) for value in losses) and losses[-1] < losses[0]):
        problems.append(f"training loss went {losses[0]:.4f} -> {losses[-1]:.4f}")
    metrics = {
        "epochs": params.train.epochs,
        "train_images": n_train,
        "test_accuracy": round(accuracy, 4),
        "images_per_second": round(n_train * len(later) / sum(later), 1),
        "train_seconds": round(seconds, 2),
        "peak_memory_mib": round(peak_mib, 1) if peak_mib is not None else None,
        "compute_dtypes": sorted(probe.compute),
        "loss_dtypes": sorted(probe.loss),
        "agreement_with_cpu": agreement,
        "agreement_with_cpu_without_tf32": float((exact_predicted == cpu_predicted).mean()),
        "final_train_loss": losses[-1],
        "train_accuracy": history[-1].train_accuracy,
    }
    detail = (
        f"acc {accuracy:.4f}, {metrics['images_per_second']:,.0f} img/s, "
        f"{params.train.epochs} epochs in {seconds:.1f} s, peak "
        f"{f'{peak_mib:.0f} MiB' if peak_mib is not None else 'n/a'}, layers "
        f"{'/'.join(probe.compute)}, loss {'/'.join(probe.loss)}, agrees with CPU "
        f"{agreement:.4f}" + (f"; {'; '.join(problems)}" if problems else "")
    )
    return (FAIL if problems else PASS), detail, metrics


def check_host_syncs(context: Context) -> CheckResult:
    """Syncs per step = the change in sync warnings between runs with more or fewer steps."""
    if context.device != "cuda":
        return SKIP, "needs CUDA (torch.cuda.set_sync_debug_mode)", {}
    import torch

    sizes = context.sizes
    runs = {}
    others: list[dict[str, str]] = []
    for batch_size in (128, 64):
        params = context.params(
            "best",
            **{
                "data.train_size": sizes.sync_train,
                "train.epochs": sizes.sync_epochs,
                "train.batch_size": batch_size,
            },
        )
        train, _ = context.data(params)
        n_train = len(train.images) - params.train.val_size
        steps = params.train.epochs * math.ceil(n_train / batch_size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                _train(context, params, train, "bf16")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [item for item in caught if SYNC_MARKER in str(item.message)]
        others += [warning_record(item) for item in caught if item not in syncs]
        where = Counter(f"{Path(item.filename).name}:{item.lineno}" for item in syncs)
        runs[batch_size] = {"steps": steps, "syncs": len(syncs), "where": dict(where)}
    (few, many) = runs[128], runs[64]
    per_step = (many["syncs"] - few["syncs"]) / (many["steps"] - few["steps"])
    detail = (
        f"{per_step:g} per step ({few['syncs']} in {few['steps']} steps, {many['syncs']} in "
        f"{many['steps']}; per run, at {', '.join(f'{k} x{v}' for k, v in few['where'].items())})"
    )
    metrics = {"per_step": per_step, "runs": runs, "extra_warnings": others}
    return (PASS if per_step == 0 else FAIL), detail, metrics


def check_same_bytes(context: Context, precision: str) -> CheckResult:
    """Each recipe trained again gives the first run's bytes; `best` also saves checkpoints."""
    import torch

    different = []
    for recipe in RECIPES:
        params = context.params(recipe)
        train, _ = context.data(params)
        first = context.models.get((recipe, precision))
        if first is None:  # its recipe check failed: train it here
            result = _train(context, params, train, precision)
            first = model_bytes(result.model, result.config)
        saved: list[bytes] = []

        def keep(state, saved=saved) -> None:
            buffer = io.BytesIO()
            torch.save(state.to_dict(), buffer)
            saved.append(buffer.getvalue())

        save = keep if recipe == "best" else None
        result = _train(context, params, train, precision, save_checkpoint=save)
        if recipe == "best":
            context.checkpoints[precision] = saved
        if model_bytes(result.model, result.config) != first:
            different.append(recipe)
    detail = f"different bytes: {', '.join(different)}" if different else "default and best"
    return (FAIL if different else PASS), detail, {"different": different}


def check_resume(context: Context, precision: str) -> CheckResult:
    """`best` resumed after its first and its second-to-last epoch ends with the same bytes."""
    import torch

    from mnist_pipeline.training.checkpoint import Checkpoint

    params = context.params("best")
    train, _ = context.data(params)
    uninterrupted = context.models.get(("best", precision))
    saved = context.checkpoints.get(precision)
    if uninterrupted is None or not saved:
        return FAIL, "not run: needs the recipe and same-bytes checks of best to pass", {}
    epochs = params.train.epochs
    different = []
    for epoch in sorted({1, max(1, epochs - 1)}):
        payload = torch.load(io.BytesIO(saved[epoch - 1]), weights_only=True)
        state = Checkpoint.from_dict(payload)
        result = _train(context, params, train, precision, resume=state)
        if model_bytes(result.model, result.config) != uninterrupted:
            different.append(epoch)
    if different:
        return FAIL, f"resumed after epoch(s) {different}: other bytes", {"different": different}
    return PASS, f"best resumed after epochs 1 and {epochs - 1} of {epochs}: same bytes", {}


def main(out: Path, device: str, size: str, data: Path, deadline: float) -> int:
    import os

    if device == "cuda":  # as resolve_device does, before anything starts cuBLAS
        from mnist_pipeline.training.runtime import CUBLAS_DETERMINISTIC_WORKSPACE

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    run_group(Recorder(out, "train", deadline), Context(device=device, size=size, data_path=data))
    sys.stdout.flush()
    return 0
