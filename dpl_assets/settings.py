"""Where a Dagster code location finds its output dir and instance.

``DPL_OUTPUT_DIR`` names the output dir (default ``./datasets/dpl_cache``, as the original
tool's ``--output_dir``). The catalog of registered videos and their input roots live in it,
so nothing else needs configuring. ``dpl run`` keeps its Dagster instance in
``{output_dir}/.dagster`` unless ``DAGSTER_HOME`` is set; point ``dagster dev`` at the same
folder to see its runs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_OUTPUT_DIR = "datasets/dpl_cache"
INSTANCE_SUBDIR = ".dagster"


def output_dir_from_env() -> Path:
    return Path(os.environ.get("DPL_OUTPUT_DIR", DEFAULT_OUTPUT_DIR)).resolve()


def bytes_from_mb_env(name: str) -> int | None:
    """Bytes given in MB by the environment variable ``name`` (None when unset or empty).
    ValueError naming the variable when it is not a whole number >= 0."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        megabytes = int(text)
        if megabytes < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{name}={text!r}: give a whole number of MB >= 0") from None
    return megabytes * 2**20


def instance_dir_for(output_dir: Path) -> Path:
    """The Dagster home ``dpl`` uses: ``DAGSTER_HOME`` if set, else under the output dir."""
    home = os.environ.get("DAGSTER_HOME")
    return Path(home).resolve() if home else output_dir.resolve() / INSTANCE_SUBDIR
