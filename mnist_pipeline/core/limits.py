"""Explicit limits on every input, checked before the input is decoded or memory allocated.

Every reader refuses an input beyond these in one `error:` line. They are generous for
real digits (docs/safety.md gives the reasoning) and small enough that a hostile file of a
few bytes cannot claim gigabytes or minutes.
"""

from __future__ import annotations

# Digits in one input file or folder: 1M images of 28x28 are 784 MB of uint8 (MNIST has 70k).
MAX_IMAGES = 1_000_000

# Image files. Checked on the header's width x height before any pixel is decoded; a
# 48-megapixel phone photo (8000x6000) passes. JPEGs are then decoded at a reduced scale.
# The one pixel bound for `prepare`, `predict` and `serve` alike (serve bounds memory by
# how many decodes run at once: mnist_pipeline/serving/limits.py).
MAX_IMAGE_PIXELS = 50_000_000
# A progressive JPEG is decoded scan by scan, and every scan walks the whole image, however
# few bytes it takes in the file: 90,000 scans of ~50 bytes cost minutes of CPU. libjpeg's
# own progressive script has 10 scans (6 for gray), tuned encoders about as many; the scan
# markers are counted before decoding.
MAX_JPEG_SCANS = 100
# ...and scans x pixels is bounded too (about 1.5 ns each on a 2-core AVX2 VM, so ~2 s):
# a 48 MP progressive photo with libjpeg's 10 scans is 0.48e9.
MAX_JPEG_SCAN_PIXELS = 1_000_000_000
MAX_IMAGE_BYTES = 256 * 1024 * 1024  # the file itself (a 50 MP 24-bit BMP is 150 MB)
# Images are reduced (JPEG while decoding, others right after) until neither side is more
# than twice this; the digit ends up 20 px tall, so nothing is lost.
WORK_SIDE = 1024

# CSV: a data line of 785 cells like `255,` is ~3 KB, a header ~8 KB; 64 KiB leaves room
# for quoting, spaces and `255.0`. A longer line is refused before it is split.
MAX_CSV_LINE_CHARS = 64 * 1024

# Safetensors headers (model files, prepared tensors): a JSON of names, shapes and offsets.
MAX_SAFETENSORS_HEADER_BYTES = 4 * 1024 * 1024
MAX_TENSOR_RANK = 8  # dimensions of one tensor; ours have at most 4
MAX_MODEL_CONFIG_CHARS = 64 * 1024  # the architecture config stored in the model's metadata
# Weights in one model file (400 MB as float32); the default mlp has 0.4M, the cnn 0.24M.
MAX_MODEL_PARAMETERS = 100_000_000

# params.yaml: the real one is ~3 KB.
MAX_PARAMS_BYTES = 1024 * 1024

# Error messages show at most this many characters of a bad value.
MAX_SHOWN_CHARS = 80
