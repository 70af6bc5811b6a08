"""The one partitioning of every datatype asset: one partition per registered video."""

from collections.abc import Iterator, Sequence

import dagster as dg

VIDEOS_PARTITION_NAME = "videos"

video_partitions = dg.DynamicPartitionsDefinition(name=VIDEOS_PARTITION_NAME)

VIDEOS_PER_RUN = 50
"""Backfills put up to this many videos in one run (the original's ``chunk_size``): models
load once per run and Dagster's per-run cost (~0.6 s in process, 3-6 s per subprocess) is
shared, instead of paid per video."""

per_video_backfill = dg.BackfillPolicy.multi_run(max_partitions_per_run=VIDEOS_PER_RUN)

PARTITIONS_PER_CALL = 10_000
"""Partition keys added per call or sensor request. Dagster's SQLite storage puts every key
of one ``add_dynamic_partitions`` call in one SQL statement, and SQLite refuses more than
32,766 variables (250,000 in newer builds): registering a million videos at once failed
with "too many SQL variables" (benchmarks/automation.py)."""


def in_chunks(keys: Sequence[str], size: int = PARTITIONS_PER_CALL) -> Iterator[Sequence[str]]:
    """``keys`` in consecutive pieces of at most ``size``, in order."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def add_video_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    """Add ``keys`` to the videos partitions, :data:`PARTITIONS_PER_CALL` at a time."""
    for chunk in in_chunks(keys):
        instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, list(chunk))


def add_video_partitions_requests(keys: Sequence[str]) -> list[dg.AddDynamicPartitionsRequest]:
    """A sensor's requests adding ``keys``, :data:`PARTITIONS_PER_CALL` per request (the
    daemon makes one call per request)."""
    return [
        dg.AddDynamicPartitionsRequest(VIDEOS_PARTITION_NAME, list(chunk))
        for chunk in in_chunks(keys)
    ]


PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
"""Run tags naming a run's video (single partition) or its range of videos."""
