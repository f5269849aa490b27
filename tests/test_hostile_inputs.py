"""Issue 11, readers: every hostile input is refused in one line, before it is decoded.

Memory and time on the big versions are measured by bench/hostile_inputs.py; these tests
use small versions of the same files and check what is refused, where and why.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.core.artifacts import load_prepared
from mnist_pipeline.core.limits import MAX_CSV_LINE_CHARS, MAX_IMAGE_PIXELS
from mnist_pipeline.formats import read_digits
from mnist_pipeline.formats.images import load_gray, read_image_bytes
from tests import hostile_files as make
from tests.conftest import refused

# --- images -------------------------------------------------------------------------------


def test_png_header_claiming_20000_squared_pixels_is_refused(tmp_path):
    path = make.png_claiming(tmp_path)
    assert path.stat().st_size < 60
    refused(lambda: read_digits(path), str(path), f"at most {MAX_IMAGE_PIXELS} pixels")


def test_png_just_over_our_limit_but_under_pillows_is_refused_by_its_header(tmp_path):
    path = make.png_claiming(tmp_path, width=10_000, height=6_000)  # 60 MP < Pillow's 89 MP
    refused(lambda: read_digits(path), "10000 x 6000 pixels", f"at most {MAX_IMAGE_PIXELS}")


def test_big_legitimate_png_is_read_reduced(tmp_path):
    path = make.big_blank_png(tmp_path, side=3000)
    gray = load_gray(path)
    assert max(gray.shape) <= 1024  # reduced right after decoding
    digit = read_digits(path).images[0, 0]
    assert digit.max() > 200  # the bar survived the reduction


def test_phone_photo_is_shown_upright_and_drafted(tmp_path):
    upright = load_gray(make.phone_photo(tmp_path, 800, 600, orientation=1))
    rotated = load_gray(make.phone_photo(tmp_path, 800, 600, orientation=6))  # 90 deg CW
    assert upright.shape == (600, 800)
    assert rotated.shape == (800, 600)  # shown as the EXIF tag says
    big = load_gray(make.phone_photo(tmp_path, 4000, 3000))
    assert max(big.shape) <= 1024  # drafted by the JPEG decoder, never 12 MP in memory


def test_eps_in_a_folder_is_refused_without_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    def no_ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript, raising=False)
    folder = tmp_path / "digits"
    folder.mkdir()
    (folder / "a.png").write_bytes(make.valid_png_bytes())
    eps = make.eps_file(folder)
    refused(lambda: read_digits(folder), str(eps), "not an image file")
    eps.rename(folder / "b.png")  # EPS content behind an image name: its decoder never runs
    refused(lambda: read_digits(folder), "b.png", "not a PNG, JPEG or BMP")


def test_hidden_files_and_os_litter_are_skipped_and_extensions_any_case(tmp_path):
    folder = tmp_path / "digits"
    (folder / "3").mkdir(parents=True)
    (folder / "3" / "A.PNG").write_bytes(make.valid_png_bytes())
    (folder / "3" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "3" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    digits = read_digits(folder, require_labels=True)
    assert digits.labels.tolist() == [3]
    assert digits.sources == ["3/A.PNG"]


@pytest.mark.parametrize("mode", ["I;16", "P", "CMYK", "RGBA", "LA", "1"])
def test_awkward_image_modes_are_read_sensibly(tmp_path, mode):
    """16-bit, palette, CMYK and transparent images give the same digit as plain gray."""
    ink = np.zeros((60, 60), np.uint8)
    ink[10:50, 27:33] = 255  # white stroke on black
    reference = read_digits(_save(tmp_path / "gray.png", Image.fromarray(ink))).images
    if mode == "I;16":
        image = Image.fromarray(ink.astype(np.uint16) * 257)  # full 16-bit range
    elif mode in ("RGBA", "LA"):
        # Dark stroke, transparent background: the paper is white, so the digit is the same.
        alpha = np.where(ink > 0, 255, 0).astype(np.uint8)
        gray = np.zeros_like(ink)
        image = Image.fromarray(np.stack([gray, alpha], -1), "LA").convert(mode)
    else:
        image = Image.fromarray(ink).convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    digits = read_digits(_save(tmp_path / f"awkward{suffix}", image)).images
    difference = np.abs(digits.astype(int) - reference.astype(int))
    assert difference.mean() < 8, difference.mean()


def _save(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def test_image_bytes_reader_for_uploads():
    digit = read_image_bytes(make.valid_png_bytes(), "upload.png")
    assert digit.shape == (28, 28)
    refused(lambda: read_image_bytes(b"%!PS-Adobe-3.0 EPSF", "evil.eps"), "evil.eps")


# --- IDX -----------------------------------------------------------------------------------


def test_idx_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    path = make.idx_gzip_bomb(tmp_path, inflated_mb=200)
    started = time.perf_counter()
    refused(lambda: read_digits(path), str(path), "has extra bytes", "10 x 28 x 28")
    assert time.perf_counter() - started < 5  # only the announced bytes (+1) are inflated


def test_idx_dims_whose_product_overflows_are_refused(tmp_path):
    path = make.idx_overflowing_dims(tmp_path)
    refused(lambda: read_digits(path), "2097152 x 2097152 pixels", "expected 28 x 28")
    labels = tmp_path / "labels-idx1-ubyte"
    labels.write_bytes(make.idx_header((2**32 - 1,)) + bytes(8))
    images = tmp_path / "images-idx3-ubyte"
    images.write_bytes(make.idx_header((1, 28, 28)) + bytes(784))
    refused(lambda: read_digits(images, labels), "4294967295 labels", "at most")


def test_idx_truncated_claiming_many_images_costs_nothing(tmp_path):
    path = tmp_path / "short-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(make.idx_header((900_000, 28, 28)) + bytes(100)))
    refused(lambda: read_digits(path), "truncated", "ends at byte offset 116")


# --- CSV -----------------------------------------------------------------------------------


def test_header_of_40000_columns_is_refused_at_once(tmp_path):
    path = make.csv_many_header_columns(tmp_path)
    started = time.perf_counter()
    refused(lambda: read_digits(path), "line 1 is longer than")
    assert time.perf_counter() - started < 2


def test_duplicate_columns_are_found_in_linear_time(tmp_path):
    path = make.csv_many_header_columns(tmp_path, columns=MAX_CSV_LINE_CHARS // 8)
    started = time.perf_counter()
    refused(lambda: read_digits(path), "duplicated column 'pixel0'")
    assert time.perf_counter() - started < 2


def test_one_very_long_line_is_refused_before_it_is_split(tmp_path):
    path = make.csv_long_line(tmp_path, megabytes=2)
    refused(lambda: read_digits(path), str(path), "line 3 is longer than")


def test_long_line_of_quoted_cells_spanning_lines_is_refused(tmp_path):
    path = tmp_path / "quoted.csv"
    row = "5," + ",".join(["0"] * 784)
    path.write_text(f"{make.CSV_HEADER}\n{row}\n" + '"1\n",' * 40_000 + "1\n")
    refused(lambda: read_digits(path), "is longer than")


def test_invalid_utf8_after_8kb_is_one_line(tmp_path):
    path = make.csv_bad_utf8_late(tmp_path)
    assert path.stat().st_size > 8192
    refused(lambda: read_digits(path), str(path), "line 12", "not text")


def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "pipe.csv"
    import os

    os.mkfifo(fifo)
    refused(lambda: read_digits(fifo), "not a regular file")


# --- labels and image counts wherever data enters ------------------------------------------


@pytest.mark.parametrize(("labels", "fragment"), [([1, 42], "label 42"), ([-7], "label -7")])
def test_prepared_tensors_with_bad_labels_are_refused(tmp_path, labels, fragment):
    path = make.prepared(tmp_path, labels)
    refused(lambda: load_prepared(path), fragment, "expected labels 0-9")
    refused(lambda: read_digits(path, require_labels=True), fragment)


def test_prepared_tensors_without_images_are_refused(tmp_path):
    path = make.prepared(tmp_path, [])
    refused(lambda: load_prepared(path), "no images")


def test_prepared_tensors_with_extra_or_misshapen_tensors_are_refused(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "odd.safetensors"
    save_file({"images": np.zeros((2, 28, 28), np.uint8), "labels": np.zeros(2)}, str(path))
    refused(lambda: load_prepared(path), "expected uint8 images (N, 1, 28, 28)", "U8 [2, 28, 28]")
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    refused(lambda: load_prepared(path), "header length")


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
@pytest.mark.parametrize("precise", [False, True])
def test_csv_with_windows_or_old_mac_line_ends_and_a_bom(tmp_path, ending, precise):
    from mnist_pipeline.formats.csv_digits import write_csv_digits
    from tests.conftest import synthetic_digits

    digits = synthetic_digits(12)
    path = tmp_path / "excel.csv"
    write_csv_digits(path, digits)
    data = b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", ending)
    if precise:  # `5.0` sends the file down the row-by-row path
        data = data.replace(ending + b"1,", ending + b"1.0,", 1)
    path.write_bytes(data)
    back = read_digits(path, require_labels=True)
    np.testing.assert_array_equal(back.images, digits.images)
    np.testing.assert_array_equal(back.labels, digits.labels)


def test_extreme_aspect_ratio_photo_is_read(tmp_path):
    pixels = np.full((3, 5000, 3), 220, np.uint8)  # fewer rows than the JPEG draft's scale
    pixels[:, 2400:2600] = 10
    path = tmp_path / "strip.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    assert load_gray(path).shape[0] >= 1
    assert read_digits(path).images.shape == (1, 1, 28, 28)
