"""Keeping the set of videos in step with the input folders, and finding what is left to do.

Shared by ``dpl run``, the new-video sensor and the backfill schedule, so all three agree on
which videos exist, which changed (their outputs are discarded: never stale), and which
(video, datatype) pairs are still to compute.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dpl_assets.catalog import Registration
from dpl_assets.datatypes import get_datatype
from dpl_assets.discovery import InputRoots
from dpl_assets.storage.store import STATUS_DIR, ArtifactStore

REJECTED = ".rejected.json"  # a rejection record's name: {video_id}.rejected.json


def sync_videos(store: ArtifactStore, inputs: InputRoots, settle_s: float = 0.0) -> Registration:
    """Scan ``inputs`` into the catalog; the outputs of videos whose files changed are
    discarded before the catalog records the change (so a crash cannot hide it)."""
    return store.catalog.register(inputs, on_changed=store.forget, settle_s=settle_s)


def pending_videos(
    store: ArtifactStore,
    video_ids: Iterable[str],
    assets: Sequence[str],
    *,
    recompute: bool = False,
    include_rejected: bool = False,
) -> list[str]:
    """The videos some of ``assets`` is not done for (missing or failed), in order.

    Done = the artefact exists, or a rejection is recorded (unless ``include_rejected``).
    Read from one listing of each asset's folders, not a file check per video.
    """
    if recompute:
        return list(video_ids)
    done: set[str] | None = None
    for key in assets:
        finished = _ids(store.output_dir / key, get_datatype(key).output_extension)
        if not include_rejected:
            finished |= _ids(store.output_dir / STATUS_DIR / key, REJECTED)
        done = finished if done is None else done & finished
    return [video_id for video_id in video_ids if done is not None and video_id not in done]


def _ids(folder: Path, suffix: str) -> set[str]:
    """The video ids of the files ``{id}{suffix}`` in ``folder`` (one listing)."""
    cut = len(suffix)
    return {name[:-cut] for name in _names(folder) if name.endswith(suffix)}


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def run_length(count: int, chunk_size: int, parallel: int = 1) -> int:
    """The length of the ranges :func:`pending_ranges` cuts ``count`` consecutive pending
    videos into (see there); 0 for none."""
    if count <= 0:
        return 0
    parallel = max(1, parallel)
    chunk_size = max(1, min(chunk_size, math.ceil(count / parallel)))
    runs = math.ceil(math.ceil(count / chunk_size) / parallel) * parallel
    return math.ceil(count / runs)


def pending_ranges(
    ordered_ids: Sequence[str], pending: Iterable[str], chunk_size: int, parallel: int = 1
) -> list[tuple[str, str]]:
    """Partition ranges covering exactly the pending ids, each at most ``chunk_size`` long
    and at most an even share of them per ``parallel`` run (so runs started together each
    get some: 12 videos and 2 parallel runs make two ranges of 6, not one of 12). The
    number of ranges is a multiple of ``parallel`` and their lengths even, so the parallel
    runs end together: 36 videos at most 11 a run over 2 are 4 ranges of 9, not 11, 11,
    11 and 3 (one process doing 22 while the other does 14).

    Ranges are runs of consecutive pending ids in the instance's partition order, so no
    done video is ever inside a range.
    """
    wanted = set(pending)
    if not wanted:
        return []
    chunk_size = run_length(len(wanted), chunk_size, parallel)
    ranges: list[tuple[str, str]] = []
    current: list[str] = []
    for video_id in ordered_ids:
        if video_id in wanted and len(current) < chunk_size:
            current.append(video_id)
            continue
        if current:
            ranges.append((current[0], current[-1]))
        current = [video_id] if video_id in wanted else []
    if current:
        ranges.append((current[0], current[-1]))
    return ranges
