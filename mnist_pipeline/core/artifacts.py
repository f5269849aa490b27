"""Artifact I/O: atomic writes, and the prepared tensors that `prepare` writes.

The input formats (CSV, IDX, image folders) live in mnist_pipeline/formats/.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from mnist_pipeline.core.digits import IMAGE_SIDE, Digits, check_digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.tensor_files import SafetensorsHeader, read_safetensors_header


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; move it over `path` only if the block succeeds.

    A stage that fails half-way therefore leaves the previous artifact untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        _fsync(tmp)  # the bytes reach the disk before the name does: a crash leaves old or new
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself is durable
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the file was synced already
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_prepared(path: Path, digits: Digits) -> None:
    """Write prepared tensors as safetensors (no pickle: safe to load from anywhere)."""
    from safetensors.numpy import save_file

    if digits.labels is None:
        raise ValueError("prepared data must be labelled")
    tensors = {"images": np.ascontiguousarray(digits.images), "labels": digits.labels}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp))


def load_prepared(path: Path) -> Digits:
    """Read tensors written by `save_prepared`, checking the header before loading anything."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: no such file; run `dvc repro prepare` first")
    what = "a safetensors file of prepared digits"
    header = read_safetensors_header(path, what)
    expected = "uint8 images (N, 1, 28, 28) and int64 labels (N,), N >= 1"
    images, labels = header.tensors.get("images"), header.tensors.get("labels")
    if (
        set(header.tensors) != {"images", "labels"}
        or images is None
        or labels is None
        or images.dtype != "U8"
        or images.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE)
        or labels.dtype != "I64"
        or labels.shape != images.shape[:1]
    ):
        raise PipelineError(f"{path}: expected {expected}, found {_shapes(header)}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PipelineError(f"{path}: not {what} ({err})") from None
    return check_digits(path, Digits(tensors["images"], tensors["labels"]))


def _shapes(header: SafetensorsHeader) -> str:
    found = [
        f"{name[:40]} {info.dtype} {list(info.shape)}" for name, info in header.tensors.items()
    ]
    return ", ".join(found[:4]) or "no tensors"


def check_output(path: Path, *, inputs: Iterable[Path | None] = (), folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be written or would destroy an input.

    A file output must not be a folder, a device or FIFO (an atomic rename would replace
    the node itself), or the same file as an input; its nearest existing folder must be
    writable. `folder=True` for an output that is a folder of files.
    """
    path = Path(path)
    kind = "folder" if folder else "file"
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise PipelineError(f"{path}: output is not a folder; expected a folder to write into")
        if not folder and path.is_dir():
            raise PipelineError(f"{path}: output is a folder; expected a file name to write to")
        if not folder and not path.is_file():
            raise PipelineError(
                f"{path}: output is {_kind(path)}, not a regular file; expected a file name "
                "to write to (writing would replace it)"
            )
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise PipelineError(
                f"{path}: output is the same {kind} as the input {source}; writing it would "
                "destroy the input"
            )
    ancestor = path if folder and path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PipelineError(f"{path}: cannot create the output: {ancestor} is not a folder")
    try:  # a real probe: os.access says yes to root even on a read-only file system
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise PipelineError(
            f"{path}: cannot write the output in folder {ancestor} ({err.strerror})"
        ) from None


def _kind(path: Path) -> str:
    """What a path that is not a regular file or folder is, for a message."""
    try:
        mode = path.stat().st_mode
    except OSError:  # a link to nowhere (stat follows links)
        return "a broken symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.exists() and other.exists() and os.path.samefile(one, other)
    except OSError:
        return False


def check_outputs(
    files: Iterable[Path], *, folders: Iterable[Path] = (), inputs: Iterable[Path | None] = ()
) -> None:
    """`check_output` for each output, and no two outputs the same path."""
    files, folders, inputs = list(files), list(folders), list(inputs)
    seen: dict[str, Path] = {}
    for path in [*files, *folders]:
        key = os.path.abspath(path)
        if key in seen:
            raise PipelineError(f"{path}: given as two different outputs; expected distinct paths")
        seen[key] = path
    for path in files:
        check_output(path, inputs=inputs)
    for path in folders:
        check_output(path, inputs=inputs, folder=True)
