"""``report.json``: one entry per video saying what became of it, read off the store.

Status per video over the datatypes a run asked for:
- ``processed``: every artefact exists;
- ``rejected``: some datatype was rejected (``reason`` names the file and the cause);
- ``failed``: something is missing without a rejection (an unexpected error; retried next run).

``damaged_spans`` lists the (start_s, end_s) spans on the container clock where the
video's frames were missing because its data was damaged (kept as ffmpeg keeps what
decodes), and ``warnings`` says so in words.

``failed_checks`` lists, per datatype, the problems its output check found (see
:mod:`dpl_assets.checks`); the summary counts the videos with any.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from dpl_assets.storage.atomic import atomic_write_text
from dpl_assets.storage.store import ArtifactStore

STATUSES = ("processed", "rejected", "failed")


@dataclass
class VideoReport:
    video_id: str
    source: str
    status: str
    reason: str | None
    outputs: dict[str, str] = field(default_factory=dict)
    failed_checks: dict[str, list[str]] = field(default_factory=dict)
    damaged_spans: list[list[float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def video_report(store: ArtifactStore, video_id: str, datatypes: Sequence[str]) -> VideoReport:
    """The status of one video over ``datatypes`` (see the module docstring)."""
    entry = store.catalog.entry(video_id)
    outputs = {
        key: str(store.artifact_path(key, video_id))
        for key in datatypes
        if store.artifact_path(key, video_id).exists()
    }
    rejections = [r for r in (store.rejection(key, video_id) for key in datatypes) if r]
    if rejections:
        # The first rejection in pipeline order is where the video was turned away.
        first = next((r for r in rejections if r.origin in datatypes), rejections[0])
        status, reason = "rejected", first.reason
    elif len(outputs) == len(datatypes):
        status, reason = "processed", None
    else:
        missing = [key for key in datatypes if key not in outputs]
        errors = [
            f"{key}: {store.failure(key, video_id)}"
            for key in missing
            if store.failure(key, video_id)
        ]
        status = "failed"
        reason = "; ".join(errors) or f"not produced: {', '.join(missing)} (see the run log)"
    failed_checks = {
        key: problems for key in outputs if (problems := store.check_problems(key, video_id))
    }
    spans, warnings = _decode_damage(store, video_id)
    return VideoReport(
        video_id, entry.primary_source, status, reason, outputs, failed_checks, spans, warnings
    )


def _decode_damage(store: ArtifactStore, video_id: str) -> tuple[list[list[float]], list[str]]:
    """The damaged spans and their description stored with the video's frames, if any."""
    path = store.existing_file("images", video_id)
    if path is None:
        return [], []
    try:
        with h5py.File(path, "r") as file:
            spans = np.asarray(file.attrs.get("damaged_spans", np.zeros((0, 2))), np.float64)
            damage = str(file.attrs.get("damage", ""))
    except OSError:
        return [], []
    return spans.reshape(-1, 2).round(3).tolist(), [damage] if damage else []


def write_report(
    path: Path, reports: Sequence[VideoReport], dataset: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Write ``report.json`` atomically; returns the count per status.

    ``dataset`` names the dataset-level outputs (asset -> folder), listed under "dataset".
    """
    counts = {status: sum(r.status == status for r in reports) for status in STATUSES}
    counts["failed_checks"] = sum(bool(r.failed_checks) for r in reports)
    document = {
        "summary": counts,
        "dataset": dict(dataset or {}),
        "videos": [asdict(r) for r in reports],
    }
    atomic_write_text(path, json.dumps(document, indent=1, ensure_ascii=False))
    return counts
