"""The ops that would make the model bytes differ between Intel and AMD CPUs, and why.

The kernel pins (core/kernels.py) make ATen's own vectorised kernels and oneDNN compute
the same bits on every x86-64 CPU. torch's elementwise transcendentals on the CPU (exp,
log, cos, sin, sqrt, ...) leave ATen for MKL's vector math (VML), whose last bit differs
between Intel and AMD and which no pin steers. One such op in training or prediction
changes the bytes of the model file or the predictions on the other vendor's CPU, while
every test on one machine still passes (docs/reproducibility.md, "MKL's vector math
elsewhere"). So the package avoids them, and tests/test_portable_ops.py scans its source
for the patterns below: a new line that uses one fails there, on any machine, unless it
is added to ALLOWED with its reason.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AvoidedOp:
    pattern: str  # a regex over a line's code, spaces, comments and strings removed
    why: str
    instead: str


AVOIDED = (
    AvoidedOp(
        r"torch\.exp\b|\.exp\(|\.exp_\(",
        "exp runs MKL's vector math on the CPU: its last bit differs between Intel and AMD",
        "torch.softmax for log-probabilities to probabilities (ATen's kernel, pinned); "
        "for other values compute in float64 and round to float32",
    ),
    AvoidedOp(
        r"logsumexp\(",
        "logsumexp computes exp through MKL's vector math",
        "x[0] - log_softmax(x, dim=0)[0]: the same log-sum-exp through ATen's softmax",
    ),
    AvoidedOp(
        r"torch\.(cos|sin|tan|tanh|log|log1p|expm1|sqrt|rsqrt|erf|sigmoid)\b"
        r"|(?<!math)(?<!np)\.(cos|sin|tan|tanh|log|log1p|expm1|sqrt|rsqrt|erf|sigmoid)_?\(",
        "these run MKL's vector math on CPU tensors too",
        "float64 then rounded to float32 (a last-bit difference of a double almost never "
        "survives that rounding), or an ATen op that does the job (log_softmax, relu)",
    ),
    AvoidedOp(
        r"foreach=True|fused=False",
        "the for-each Adam takes its square root with torch.sqrt (MKL's vector math)",
        "make_optimizer's fused=True, which one process uses (training/optimization.py)",
    ),
)

# (file under the package, the line's code as the scan sees it) -> why it is portable.
# Python's `math.` and numpy's `np.` functions are not torch ops: the scan skips them.
ALLOWED = {
    ("training/augment.py", "cos=torch.cos(angle.double()).to(angle.dtype)/zoom"): "float64",
    ("training/augment.py", "sin=torch.sin(angle.double()).to(angle.dtype)/zoom"): "float64",
    # The elastic field's Gaussian, on float64 offsets; the blur matrix is rounded to float32.
    ("training/augment.py", "kernel=torch.exp(-0.5*(offsets/sigma)**2)"): "float64, rounded",
}


def code_lines(source: str) -> dict[int, str]:
    """Line number -> the line's code without spaces, comments and strings."""
    lines: dict[int, str] = {}
    skipped = {tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE}
    skipped |= {tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for token in tokenize.tokenize(io.BytesIO(source.encode()).readline):
        if token.type not in skipped and token.type != getattr(tokenize, "FSTRING_MIDDLE", -1):
            lines[token.start[0]] = lines.get(token.start[0], "") + token.string
    return lines


def scan(package: Path) -> list[str]:
    """Every use of an avoided op in the package's source that ALLOWED does not name, as
    'file:line: code: why; instead ...'."""
    found = []
    for path in sorted(Path(package).rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        source = path.read_text()
        lines = source.splitlines()
        for number, code in code_lines(source).items():
            for op in AVOIDED:
                if re.search(op.pattern, code) and (relative, code) not in ALLOWED:
                    shown = lines[number - 1].strip()
                    found.append(f"{relative}:{number}: {shown}: {op.why}; instead {op.instead}")
    return found
