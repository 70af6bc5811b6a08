"""Datapipeline as a Dagster asset project: talking videos -> avatar training data."""

import warnings

import dagster as dg

# backfill_policy and pool are marked beta in dagster 1.13; we rely on them deliberately.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from dpl_assets.definitions import build_definitions  # noqa: E402

defs = build_definitions()

__all__ = ["build_definitions", "defs"]
