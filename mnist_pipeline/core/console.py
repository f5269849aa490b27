"""The one way the pipeline talks to a person: a line on stderr, so stdout stays for data."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    """Print one progress or summary line on stderr, at once (logs show it as it happens)."""
    print(message, file=sys.stderr, flush=True)
