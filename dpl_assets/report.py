"""``report.json``: one entry per video saying what became of it, read off the store.

Status per video over the datatypes a run asked for:
- ``processed``: every artefact exists;
- ``rejected``: some datatype was rejected. ``reasons`` lists every distinct reason the
  video was turned away for (each names the file and the cause; a film with no audio
  stream and no face has both), in pipeline order; ``reason`` is them joined by "; ";
- ``failed``: something is missing without a rejection (an unexpected error; retried next
  run); ``reason`` says what, ``reasons`` is empty.

``stats`` holds the video's basic numbers, each only where an output it is read from
exists (so a rejected video has those its surviving outputs give, an empty file none):

- ``frames``: decoded video frames (``images``), ``fps``: their nominal rate (the ``fps``
  parameter when frames were resampled), ``duration_s``: the span the frames cover on the
  container clock (last frame time - first frame time + 1 / fps);
- ``audio_s``: length of the 16 kHz wav (samples / rate);
- ``face_coverage``: fraction (0-1) of frames with the followed face, detected or gap
  filled (``faces/{id}.json``);
- ``speech_s``: seconds of speech (``speech_spans/{id}.json``, ``SpeechNode``);
- ``segments_kept_s`` and ``segments_dropped_s`` (reason -> seconds, each dropped frame
  charged to one reason): the training segments (``segments/{id}.json``, ``SegmentNode``).

``damaged_spans`` lists the (start_s, end_s) spans on the container clock where the
video's frames were missing, or its audio is silence, because its data was damaged (kept
as ffmpeg keeps what decodes), and ``warnings`` says so in words (video and audio apart).

``failed_checks`` lists, per datatype, the problems its output check found (see
:mod:`dpl_assets.checks`); the summary counts the videos with any. ``failed_outputs``: the
datatypes whose step failed on the video, with the error (also when another step rejected
it: a rejected video's other failures are not hidden).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import soundfile

from dpl_assets.datatypes import AUDIO_REFERENCE, DATATYPES, FRAME_REFERENCE, StorageFormat
from dpl_assets.storage.atomic import atomic_path
from dpl_assets.storage.store import ArtifactStore

STATUSES = ("processed", "rejected", "failed")
"""The statuses of a report entry, in the order tables and legends list them."""
REASON_SEPARATOR = "; "
STATS_SOURCES = (FRAME_REFERENCE, AUDIO_REFERENCE, "faces", "speech_spans", "segments")
"""Datatypes whose files give an entry's ``stats`` whether or not they are reported."""


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
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    failed_outputs: dict[str, str] = field(default_factory=dict)


def rejection_reasons(
    store: ArtifactStore, video_id: str, datatypes: Iterable[str] | None = None
) -> list[str]:
    """Every distinct reason ``video_id`` was rejected for, over ``datatypes`` (default:
    every per-video datatype), in their order; a reason carried downstream counts once.

    The datatype where a rejection originated comes first, so each cause appears at the
    step that found it.
    """
    keys = list(datatypes) if datatypes is not None else per_video_datatypes()
    records = [(key, r) for key in keys if (r := store.rejection(key, video_id)) is not None]
    position = {key: index for index, key in enumerate(keys)}
    records.sort(key=lambda item: position.get(item[1].origin, position[item[0]]))
    reasons: list[str] = []
    for _, record in records:
        if record.reason not in reasons:
            reasons.append(record.reason)
    return reasons


def without_subject(reason: str, subjects: Iterable[str | None] = ()) -> str:
    """``reason`` without the file or video it starts with ("/v/a.mp4: no audio stream"
    -> "no audio stream"): a leading one of ``subjects`` (the source path, the video id)
    followed by ": " is cut, and so is any leading path (text with a slash) before ": "."""
    text = reason.strip()
    for subject in sorted((s for s in subjects if s), key=len, reverse=True):
        if text.startswith(subject + ": "):
            return text[len(subject) + 2 :]
    head, colon, rest = text.partition(": ")
    return rest if colon and ("/" in head or "\\" in head) else text


def per_video_datatypes() -> list[str]:
    """Every per-video datatype of the registry, in its (pipeline) order."""
    return [key for key, dt in DATATYPES.items() if dt.storage is not StorageFormat.MEDIA]


def video_report(store: ArtifactStore, video_id: str, datatypes: Sequence[str]) -> VideoReport:
    """The status of one video over ``datatypes`` (see the module docstring)."""
    entry = store.catalog.entry(video_id)
    outputs = {
        key: str(store.artifact_path(key, video_id))
        for key in datatypes
        if store.artifact_path(key, video_id).exists()
    }
    reasons = rejection_reasons(store, video_id, datatypes)
    # Steps that failed on this video (kept even when another step rejected it).
    failed_outputs = {
        key: error
        for key in datatypes
        if key not in outputs and (error := store.failure(key, video_id))
    }
    if reasons:
        # One line naming the file once: "a.mp4: no audio stream; no face: ..."
        subjects = (entry.primary_source, video_id)
        rest = [without_subject(r, subjects) for r in reasons[1:]]
        status, reason = "rejected", REASON_SEPARATOR.join([reasons[0], *rest])
    elif len(outputs) == len(datatypes):
        status, reason = "processed", None
    else:
        missing = [key for key in datatypes if key not in outputs]
        errors = [f"{key}: {error}" for key, error in failed_outputs.items()]
        status = "failed"
        reason = "; ".join(errors) or f"not produced: {', '.join(missing)} (see the run log)"
    failed_checks = {
        key: problems for key in outputs if (problems := store.check_problems(key, video_id))
    }
    stats, spans, warnings = _frame_facts(store, video_id)
    audio_damage = store.damage(AUDIO_REFERENCE, video_id) if AUDIO_REFERENCE in outputs else None
    if audio_damage:
        audio_spans = [[round(a, 3), round(b, 3)] for a, b in audio_damage["spans"]]
        spans = sorted(spans + audio_spans)
        warnings = [*warnings, str(audio_damage["damage"])]
    stats.update(_audio_stats(store, video_id))
    stats.update(_face_stats(store, video_id))
    stats.update(_curation_stats(store, video_id))
    return VideoReport(
        video_id, entry.primary_source, status, reason, outputs, failed_checks, spans,
        warnings, reasons, stats, failed_outputs,
    )  # fmt: skip


def refused_reports(store: ArtifactStore) -> list[VideoReport]:
    """Files refused at discovery (symbolic links out of the roots, broken, looping), as
    the catalog keeps them: never registered, never run, reported ``rejected``."""
    return [
        VideoReport(entry.video_id, entry.path, "rejected", entry.reason, reasons=[entry.reason])
        for entry in store.catalog.refused()
    ]


def all_video_reports(store: ArtifactStore, datatypes: Sequence[str]) -> list[VideoReport]:
    """Every registered video's report, then every refused file's: what ``report.json``
    lists (and so what the dataset summary counts)."""
    reports = [video_report(store, video_id, datatypes) for video_id in store.catalog.entries()]
    return reports + refused_reports(store)


def _frame_facts(
    store: ArtifactStore, video_id: str
) -> tuple[dict[str, Any], list[list[float]], list[str]]:
    """Frame stats, damaged spans and their description, from the video's ``images``."""
    path = store.existing_file(FRAME_REFERENCE, video_id)
    if path is None:
        return {}, [], []
    try:
        with h5py.File(path, "r") as file:
            spans = np.asarray(file.attrs.get("damaged_spans", np.zeros((0, 2))), np.float64)
            damage = str(file.attrs.get("damage", ""))
            fps = float(file.attrs.get("fps", 0.0) or 0.0)
            times = np.asarray(file["timestamps"], np.float64) if "timestamps" in file else None
    except (OSError, KeyError, ValueError):
        return {}, [], []
    stats: dict[str, Any] = {}
    if times is not None:
        stats["frames"] = int(times.size)
        if fps > 0:
            stats["fps"] = round(fps, 3)
        if times.size and np.isfinite(times).all():
            step = 1 / fps if fps > 0 else 0.0
            stats["duration_s"] = round(float(times[-1] - times[0] + step), 3)
    return stats, spans.reshape(-1, 2).round(3).tolist(), [damage] if damage else []


def _audio_stats(store: ArtifactStore, video_id: str) -> dict[str, Any]:
    path = store.existing_file(AUDIO_REFERENCE, video_id)
    if path is None:
        return {}
    try:
        info = soundfile.info(str(path))
    except (OSError, RuntimeError, soundfile.LibsndfileError):
        return {}
    return {"audio_s": round(info.frames / info.samplerate, 3)} if info.samplerate else {}


def _face_stats(store: ArtifactStore, video_id: str) -> dict[str, Any]:
    """``face_coverage``: the faces record's ``coverage`` (fraction 0..1 of frames with a
    face, rounded to 4 places); empty without a readable record. A consumer of the record,
    beside its ``RecordStat`` (``face_coverage_pct``) on the output's metadata."""
    path = store.existing_file("faces", video_id)
    if path is None:
        return {}
    try:
        coverage = json.loads(path.read_text(encoding="utf-8")).get("coverage")
    except (OSError, ValueError, AttributeError):
        return {}
    return {} if coverage is None else {"face_coverage": round(float(coverage), 4)}


def _curation_stats(store: ArtifactStore, video_id: str) -> dict[str, Any]:
    """``speech_s``, ``segments_kept_s`` and ``segments_dropped_s`` (see the module
    docstring), each where its record exists and reads; a consumer of the records."""
    stats: dict[str, Any] = {}
    for key, fields in (
        ("speech_spans", {"speech_s": "speech_s"}),
        ("segments", {"kept_s": "segments_kept_s", "dropped_s": "segments_dropped_s"}),
    ):
        path = store.existing_file(key, video_id)
        if path is None:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            stats.update({name: record[field] for field, name in fields.items()})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return stats


def entry_text(report: VideoReport) -> str:
    """The entry as ``report.json`` (``indent=1``) writes it inside its ``videos`` list."""
    return json.dumps(asdict(report), indent=1, ensure_ascii=False).replace("\n", "\n  ")


def write_document(path: Path, counts: dict, dataset: dict, texts: Iterable[str]) -> None:
    """Write ``report.json`` atomically from entry texts (:func:`entry_text`), streamed:
    byte for byte what ``json.dumps({"summary", "dataset", "videos"}, indent=1)`` gives."""
    head = json.dumps({"summary": counts, "dataset": dataset, "videos": []},
                      indent=1, ensure_ascii=False)  # fmt: skip
    assert head.endswith('"videos": []\n}')
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8") as sink:
        sink.write(head[: -len("]\n}")])
        first = True
        for text in texts:
            sink.write(("\n  " if first else ",\n  ") + text)
            first = False
        sink.write("]\n}" if first else "\n ]\n}")


def counts_of(statuses: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """The report's ``summary`` from (status, has failed checks) pairs."""
    counts = dict.fromkeys(STATUSES, 0)
    counts["failed_checks"] = 0
    for status, checks in statuses:
        counts[status] += 1
        counts["failed_checks"] += bool(checks)
    return counts


def write_report(
    path: Path, reports: Sequence[VideoReport], dataset: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Write ``report.json`` atomically; returns the count per status.

    ``dataset`` names the dataset-level outputs (asset -> folder), listed under "dataset".
    """
    counts = counts_of((r.status, bool(r.failed_checks)) for r in reports)
    write_document(path, counts, dict(dataset or {}), (entry_text(r) for r in reports))
    return counts
