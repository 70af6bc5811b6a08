"""Node computations as plain functions of paths and arrays, one module per family.

Nothing here imports Dagster: the asset layer (:mod:`dpl_assets.assets`) wraps these
functions, and tests and benchmarks call them directly.
"""
