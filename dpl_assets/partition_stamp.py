"""Whether the instance's video partitions are still the registered videos, without listing
a million keys (3.7 s through Dagster's API at a million; a summary of them: ~0.1 s at
100,000).

``dpl run`` lists the partitions to add the missing ones (a video whose partition was
deleted by hand in the UI, or that a failed registration left out) and to learn their
order (runs cover ranges of it). After a listing that found nothing to add or delete, it
keeps ``{output_dir}/_index/partitions.json``: a digest of the registered video ids and a
summary of the instance's ``videos`` partitions taken before that listing. A later run
whose registration found nothing new or removed, whose ids digest is the same, whose
partition summary is the same, and which has nothing to run, skips the listing.

The summary: count of keys, the sum and the largest of their row ids, the latest creation
time, the sum of the keys' lengths, and a digest of the :data:`NEWEST` newest rows (id and
key), in two queries on Dagster's ``dynamic_partitions`` table (SQLite or PostgreSQL).
Adding a key gives its row an id above every remaining one, so a change that keeps the
count, the id sum and the largest id replaced the newest rows (SQLite reuses the ids of the
last rows deleted; PostgreSQL never reuses one): the digest of the newest rows tells (the
replaced rows are among them, or they are the newest of them).
That table is Dagster's storage, not its public API: on any other storage, or any error,
there is no summary (None) and ``dpl run`` lists the keys as before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from dpl_assets.catalog import ids_digest
from dpl_assets.folder_stamps import INDEX_DIR
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.storage.atomic import atomic_write_text

RECORD_NAME = "partitions.json"
NEWEST = 1000
"""The newest partition rows whose ids and keys the summary's digest covers."""


def partitions_summary(instance: dg.DagsterInstance) -> list | None:
    """The summary of the instance's video partitions (see the module docstring), as JSON
    values, or None when the storage does not offer one."""
    try:
        import sqlalchemy as db
        from dagster._core.storage.event_log.schema import DynamicPartitionsTable
        from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

        storage = instance.event_log_storage
        if not isinstance(storage, SqlEventLogStorage):
            return None
        table = DynamicPartitionsTable.c
        query = db.select(
            db.func.count(),
            db.func.sum(table.id),
            db.func.max(table.id),
            db.func.max(table.create_timestamp),
            db.func.sum(db.func.length(table.partition)),
        ).where(table.partitions_def_name == VIDEOS_PARTITION_NAME)
        newest = (
            db.select(table.id, table.partition)
            .where(table.partitions_def_name == VIDEOS_PARTITION_NAME)
            .order_by(table.id.desc())
            .limit(NEWEST)
        )
        with storage.index_connection() as conn:
            row = conn.execute(query).fetchone()
            rows = conn.execute(newest).fetchall()
    except Exception:  # Dagster's internals moved: list the keys instead
        return None
    if row is None:
        return None
    newest_digest = hashlib.sha256(json.dumps([list(r) for r in rows]).encode()).hexdigest()
    return [None if v is None else str(v) for v in row] + [newest_digest]


def _record_path(output_dir: Path) -> Path:
    return output_dir / INDEX_DIR / RECORD_NAME


def in_step(output_dir: Path, video_ids: Sequence[str], summary: list | None) -> bool:
    """Whether the last listing's record says the partitions are exactly ``video_ids``:
    the same ids, and the instance's partitions unchanged since (``summary``)."""
    if summary is None:
        return False
    try:
        record = json.loads(_record_path(output_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record == {"ids": ids_digest(video_ids), "partitions": summary}


def keep(output_dir: Path, video_ids: Sequence[str], summary: list | None) -> None:
    """Record that the partitions, summarized ``summary`` before a listing that found
    nothing to add or delete, are ``video_ids``; forget any record when ``summary`` is
    None."""
    path = _record_path(output_dir)
    if summary is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps({"ids": ids_digest(video_ids), "partitions": summary}))


def forget(output_dir: Path) -> None:
    """Drop the record (the partitions are about to change)."""
    _record_path(output_dir).unlink(missing_ok=True)
