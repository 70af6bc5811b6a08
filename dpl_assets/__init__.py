"""Datapipeline as a Dagster asset project: talking videos -> avatar training data."""

# First, before any library registers its exit handlers (atexit runs them last-in first-out,
# so all of theirs run before this one's): see the module.
from dpl_assets import fast_exit

fast_exit.install()

import warnings  # noqa: E402

from dpl_assets import npy_header_lock  # noqa: E402

npy_header_lock.install()  # before any step's reader threads load a .npy


import dagster as dg  # noqa: E402

# backfill_policy and pool are marked beta in dagster 1.13; we rely on them deliberately.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from dpl_assets.definitions import build_definitions  # noqa: E402

defs = build_definitions()

__all__ = ["build_definitions", "defs"]
