"""Makers of hostile and awkward input files, shared by tests/test_hostile_*.py and
bench/hostile_inputs.py (which makes the big versions and measures time and memory).

Each maker writes one file (or folder) under `folder` and returns its path.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from mnist_pipeline.core.digits import PIXEL_COLUMNS

CSV_HEADER = "label," + ",".join(PIXEL_COLUMNS)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_claiming(folder: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A tiny PNG (no pixel data) whose header claims width x height 8-bit gray pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")
    path = folder / "claims-huge.png"
    path.write_bytes(data)
    return path


def big_blank_png(folder: Path, side: int = 6000) -> Path:
    """A legitimate side x side PNG of one dark bar on white: tiny on disk, big decoded."""
    from PIL import Image

    pixels = np.full((side, side), 255, np.uint8)
    pixels[side // 3 : 2 * side // 3, side // 2 - side // 60 : side // 2 + side // 60] = 0
    path = folder / f"big-{side}.png"
    Image.fromarray(pixels).save(path, optimize=True)
    return path


def phone_photo(folder: Path, width: int = 4000, height: int = 3000, orientation: int = 1) -> Path:
    """A 12-megapixel JPEG of a dark digit-like stroke on noisy paper, with EXIF orientation."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(170, 230, (height, width, 3), dtype=np.uint8)
    pixels[height // 4 : 3 * height // 4, width // 2 - width // 40 : width // 2 + width // 40] = 15
    pixels[height // 4 : height // 4 + height // 20, width // 2 : width // 2 + width // 8] = 15
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = folder / f"photo-{width}x{height}-o{orientation}.jpg"
    image.save(path, quality=90, exif=exif)
    return path


def eps_file(folder: Path, name: str = "digit.eps") -> Path:
    """A small EPS file: Pillow would hand it to Ghostscript if its decoder were allowed."""
    path = folder / name
    path.write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n"
        b"newpath 10 5 moveto 10 23 lineto stroke\nshowpage\n%%EOF\n"
    )
    return path


def idx_header(dims: tuple[int, ...], magic_type: int = 0x08) -> bytes:
    return bytes([0, 0, magic_type, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def idx_gzip_bomb(folder: Path, inflated_mb: int = 600, claimed_images: int = 10) -> Path:
    """A gzipped IDX images file whose header claims a few images, then inflates to MBs."""
    path = folder / "bomb-images-idx3-ubyte.gz"
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as file:
        file.write(idx_header((claimed_images, 28, 28)))
        for _ in range(inflated_mb):
            file.write(zeros)
    return path


def idx_overflowing_dims(folder: Path) -> Path:
    """An IDX images header with dims (2^22, 2^21, 2^21): their product overflows int64."""
    path = folder / "overflow-images-idx3-ubyte"
    path.write_bytes(idx_header((2**22, 2**21, 2**21)) + bytes(64))
    return path


def csv_many_header_columns(folder: Path, columns: int = 40_000) -> Path:
    path = folder / "wide-header.csv"
    path.write_text(",".join(["pixel0"] * columns) + "\n")
    return path


def csv_long_line(folder: Path, megabytes: int = 30) -> Path:
    """A valid header and row, then one line of `megabytes` MB of short cells."""
    row = "5," + ",".join(["0"] * 784)
    cells = megabytes * (1 << 20) // 2
    path = folder / "long-line.csv"
    with path.open("w") as file:
        file.write(f"{CSV_HEADER}\n{row}\n")
        file.write(",".join(["1"] * cells) + "\n")
        file.write(f"{row}\n")
    return path


def csv_bad_utf8_late(folder: Path, rows: int = 10) -> Path:
    """A valid CSV whose last row, well after the first 8 KB, holds a byte that is not UTF-8."""
    row = "5," + ",".join(["0"] * 784)
    path = folder / "bad-utf8.csv"
    path.write_bytes((f"{CSV_HEADER}\n" + f"{row}\n" * rows).encode() + b"5,\xff\xfe,0\n")
    return path


def model_with_config(folder: Path, change: dict, name: str = "model.safetensors") -> Path:
    """A real mlp model file whose config metadata is changed (weights left as they are)."""
    import torch
    from safetensors.torch import save_file

    from mnist_pipeline.core.params import ModelParams
    from mnist_pipeline.model.model_file import _CONFIG_KEY, save_model
    from mnist_pipeline.model.networks import build_model

    config = ModelParams(arch="mlp", hidden=[8], dropout=0.1, channels=[])
    path = folder / name
    torch.manual_seed(0)
    save_model(build_model(config), config, path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
        fields = json.loads(file.metadata()[_CONFIG_KEY])
    fields.update(change)
    save_file(state, str(path), metadata={_CONFIG_KEY: json.dumps(fields)})
    return path


def model_with_raw_config(folder: Path, config_text: str) -> Path:
    """A model file whose config metadata is the given text verbatim (e.g. deep JSON)."""
    import torch
    from safetensors.torch import save_file

    from mnist_pipeline.model.model_file import _CONFIG_KEY

    path = folder / "raw-config.safetensors"
    save_file({"layers.1.weight": torch.zeros(2, 2)}, str(path), {_CONFIG_KEY: config_text})
    return path


def prepared(folder: Path, labels: list[int], name: str = "prepared.safetensors") -> Path:
    """Prepared tensors with the given labels (one blank-ish image per label)."""
    from safetensors.numpy import save_file

    images = np.zeros((len(labels), 1, 28, 28), np.uint8)
    images[:, 0, 5:20, 12:15] = 255
    path = folder / name
    save_file({"images": images, "labels": np.asarray(labels, np.int64)}, str(path))
    return path


def predictions_with(folder: Path, cell: str, column: str = "prob_3") -> Path:
    """A labelled predictions table of two rows whose second row has `cell` in `column`."""
    columns = ["Predicted Value", "True Value", "Confidence"] + [f"prob_{d}" for d in range(10)]
    rows = []
    for label in (3, 7):
        probs = ["0.0"] * 10
        probs[label] = "1.0"
        rows.append([str(label), str(label), "1.0", *probs])
    rows[1][columns.index(column)] = cell
    path = folder / "predictions.csv"
    path.write_text("\n".join(",".join(row) for row in [columns, *rows]) + "\n")
    return path


def yaml_alias_bomb(params_text: str, key_line: str, levels: int = 7) -> str:
    """params.yaml text with `key_line`'s value replaced by a ~300-byte alias bomb of
    10^levels leaves (shared objects: cheap to load, ruinous to repr)."""
    parts = ["&a [1,1,1,1,1,1,1,1,1,1]"]
    for index in range(levels):
        name, previous = chr(98 + index), chr(97 + index)
        parts.append(f"&{name} [" + ",".join([f"*{previous}"] * 10) + "]")
    key = key_line.split(":")[0]
    return params_text.replace(key_line, f"{key}: [" + ", ".join(parts) + "]")


def valid_png_bytes(side: int = 28) -> bytes:
    from PIL import Image

    pixels = np.zeros((side, side), np.uint8)
    pixels[side // 4 : 3 * side // 4, side // 2 - 1 : side // 2 + 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()
