"""A script in a fresh Python process (the tests' own interpreter, the repository as its
working directory), for what must start from a clean process: allocator policies, patched
libraries, first imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def script_output(script: str, *args: str) -> str:
    """``python -c script args...`` run to the end (CalledProcessError if it fails); its
    standard output."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
