"""Benchmark: time and peak memory of every big hostile input of issue 11, against its budget.

The files are made in a temp dir by tests/hostile_files.py (the big versions: a 600 MB
gzip bomb, a 30 MB CSV line, a 12-megapixel photo...). Each case then runs in a fresh
subprocess; its peak resident memory is read from os.wait4's rusage (ru_maxrss) and,
as a cross-check, from the child's own VmHWM. This parent imports only the standard
library, so the child starts small.

    python bench/hostile_inputs.py [--budget-seconds 20] [--budget-mib 1024] [--only NAME]

Prints one row per case (outcome, seconds, peak MiB) and exits 1 if any case is over
budget or ends in anything but a result or one `error:` line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (maker call building the file under folder `f`, reader call on path `p`)
CASES = {
    "png-claims-20000x20000": ("make.png_claiming(f)", "read_digits(p)"),
    "png-6000x6000-48KB": ("make.big_blank_png(f, 6000)", "read_digits(p)"),
    "png-7000x7000-just-under-limit": ("make.big_blank_png(f, 7000)", "read_digits(p)"),
    "jpeg-12MP-phone-photo": ("make.phone_photo(f, 4000, 3000, 6)", "read_digits(p)"),
    "folder-with-eps": ("folder_with_eps(f)", "read_digits(p)"),
    "idx-gzip-bomb-600MB": ("make.idx_gzip_bomb(f, 600)", "read_digits(p)"),
    "idx-dims-overflow": ("make.idx_overflowing_dims(f)", "read_digits(p)"),
    "csv-header-40000-columns": ("make.csv_many_header_columns(f)", "read_digits(p)"),
    "csv-one-30MB-line": ("make.csv_long_line(f, 30)", "read_digits(p)"),
    "csv-bad-utf8-late": ("make.csv_bad_utf8_late(f)", "read_digits(p)"),
    "model-hidden-100000": ("make.model_with_config(f, {'hidden': [100000]})", "load_model(p)"),
    "model-hidden-1e9": ("make.model_with_config(f, {'hidden': [10**9]})", "load_model(p)"),
    "model-deep-json": (
        "make.model_with_raw_config(f, '[' * 10**6 + ']' * 10**6)",
        "load_model(p)",
    ),
    "prepared-label-42": ("make.prepared(f, [1, 42])", "read_digits(p, require_labels=True)"),
    "predictions-NaN": ("make.predictions_with(f, 'NaN')", "read_predictions(p)"),
    "yaml-alias-bomb-1e9-leaves": ("alias_bomb(f, 9)", "load_params(p)"),
}

_IMPORTS = {
    "read_digits": "from mnist_pipeline.formats import read_digits",
    "load_model": "from mnist_pipeline.model.model_file import load_model",
    "read_predictions": "from mnist_pipeline.core.predictions import read_predictions",
    "load_params": "from mnist_pipeline.core.params import load_params",
}

_MAKER = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests import hostile_files as make

def folder_with_eps(f):
    folder = f / "digits"
    folder.mkdir()
    (folder / "a.png").write_bytes(make.valid_png_bytes())
    make.eps_file(folder)
    return folder

def alias_bomb(f, levels):
    text = make.yaml_alias_bomb(Path({root!r}, "params.yaml").read_text(), "  epochs: 50", levels)
    path = f / "bomb.yaml"
    path.write_text(text)
    return path

f = Path(sys.argv[1])
print({maker})
"""

_CHILD = """
import json, re, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from mnist_pipeline.core.errors import PipelineError
{imports}
p = Path(sys.argv[1])
start = time.perf_counter()
try:
    result = {reader}
    outcome = "read " + str(getattr(result, "images", result).__class__.__name__)
    if hasattr(result, "images"):
        outcome = f"read {{len(result.images)}} image(s)"
except PipelineError as err:
    outcome = "error: " + str(err)
seconds = time.perf_counter() - start
status = Path("/proc/self/status").read_text()
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(json.dumps({{"outcome": outcome, "seconds": seconds, "vmhwm_mib": hwm}}))
"""


def _run(code: str, *args: str) -> tuple[int, str, str, float, float]:
    """(exit status, stdout, stderr, wall seconds, peak RSS MiB from wait4) of a child."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    return os.waitstatus_to_exitcode(status), out, err, seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=20.0)
    parser.add_argument("--budget-mib", type=float, default=1024.0)
    parser.add_argument("--only", help="run only the cases whose name contains this")
    options = parser.parse_args()
    failures = 0
    print(f"{'case':34} {'seconds':>8} {'peak MiB':>9} {'VmHWM':>7}  outcome")
    with tempfile.TemporaryDirectory() as temp:
        for index, (name, (maker, reader)) in enumerate(CASES.items()):
            if options.only and options.only not in name:
                continue
            folder = Path(temp, str(index))
            folder.mkdir()
            code = _MAKER.format(root=str(ROOT), maker=maker)
            status, out, err, _, _ = _run(code, str(folder))
            if status != 0:
                print(f"{name:34} could not make the file: {err.strip()[-300:]}")
                failures += 1
                continue
            path = out.strip().splitlines()[-1]
            function = reader.split("(")[0]  # import only what the case needs
            code = _CHILD.format(root=str(ROOT), reader=reader, imports=_IMPORTS[function])
            status, out, err, _, peak = _run(code, path)
            if status != 0:  # a traceback: the reader failed in an unplanned way
                print(f"{name:34} FAILED (exit {status}): {err.strip()[-300:]}")
                failures += 1
                continue
            row = json.loads(out.strip().splitlines()[-1])
            over = row["seconds"] > options.budget_seconds or peak > options.budget_mib
            failures += over
            outcome = row["outcome"].replace(path, "<file>")[:110]
            print(
                f"{name:34} {row['seconds']:8.2f} {peak:9.0f} {row['vmhwm_mib']:7.0f}  "
                f"{'OVER BUDGET ' if over else ''}{outcome}",
                flush=True,
            )
    print(f"budget: {options.budget_seconds:g} s and {options.budget_mib:g} MiB per case")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
