"""The numbers behind the dataset summary, read per video from a run's report and outputs.

:func:`collect_summary_inputs` turns each ``report.json`` video entry into a record: the
entry plus

- ``reasons``: every rejection reason (``reason`` alone for an entry without the list);
- ``duration_s``: seconds, the report's ``stats`` (decoded frames) else
  ``probe/{id}.json``;
- ``face_coverage``: fraction of frames with a face (detected or gap filled), the report's
  ``stats`` else ``faces/{id}.json``; for a video rejected for its faces, read off the
  reason ("face in 37% of frames" -> 0.37, "no face" -> 0.0) so the histogram shows the cut;
- ``volume_*``: the loudness envelope ``volume/{id}.npy`` (T,): ``mean``, ``std``,
  ``median``, ``p10``, ``p90`` (10th and 90th percentiles);
- ``wav2vec_norm_*``: the same of the L2 norms of the rows of ``wav2vec/{id}.npy`` (T, D);
- ``segment_kept_s`` and ``segment_dropped_s`` (reason -> seconds): the training segments
  of ``segments/{id}.json`` (``SegmentNode``), None without one;
- ``unreadable``: paths of files that exist but could not be read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets.datatypes import get_datatype
from dpl_assets.report import STATUSES as STATUSES  # re-exported for the summary modules
from dpl_assets.visualize.rejection_reasons import coverage_from_reasons, reasons_of

_WAV2VEC_CHUNK_ROWS = 8192  # rows per read when norming a memory-mapped (T, D) array
_STAT_NAMES = ("mean", "std", "median", "p10", "p90")


def collect_summary_inputs(
    output_dir: Path, report: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One record per video of ``report`` (the ``report.json`` document, or its
    ``videos`` list) with the numbers of the module docstring added.

    Files are found through each entry's ``outputs`` paths, else at the README's layout
    ``{output_dir}/{key}/{video_id}{ext}``. Missing files leave their numbers None;
    unreadable ones too, and are listed in ``unreadable``. Large arrays are memory-mapped.
    """
    videos = report["videos"] if isinstance(report, Mapping) else report
    return [_summary_record(Path(output_dir), entry) for entry in videos]


def finite_values(
    videos: Sequence[Mapping[str, Any]], key: str, status: str | None = None
) -> list[float]:
    """Finite numbers under ``key`` of the records (of videos with ``status`` when given)."""
    return [
        float(v[key])
        for v in videos
        if v.get(key) is not None
        and math.isfinite(float(v[key]))
        and (status is None or v.get("status") == status)
    ]


def _summary_record(output_dir: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` with the numbers of the module docstring added (see
    :func:`collect_summary_inputs`)."""
    record: dict[str, Any] = dict(entry)
    unreadable: list[str] = []
    stats = entry.get("stats") or {}

    def read(key: str, reader: Callable[[Path], Any]) -> Any:
        return _read_output(output_dir, entry, key, reader, unreadable)

    record["reasons"] = reasons_of(entry)
    duration = stats.get("duration_s")
    if duration is None:
        duration = read("probe", _probe_duration)
    record["duration_s"] = None if duration is None else float(duration)
    coverage = stats.get("face_coverage")
    if coverage is None:
        coverage = read("faces", _face_coverage)
    if coverage is None and entry.get("status") == "rejected":
        coverage = coverage_from_reasons(record["reasons"])
    record["face_coverage"] = None if coverage is None else float(coverage)
    for key, reader in (("volume", _volume_stats), ("wav2vec_norm", _wav2vec_norm_stats)):
        values = read("volume" if key == "volume" else "wav2vec", reader) or {}
        for name in _STAT_NAMES:
            record[f"{key}_{name}"] = values.get(name)
    segments = read("segments", _segment_seconds) or {}
    record["segment_kept_s"] = segments.get("kept_s")
    record["segment_dropped_s"] = segments.get("dropped_s")
    record["unreadable"] = unreadable
    return record


def _read_output(
    output_dir: Path,
    entry: Mapping[str, Any],
    key: str,
    reader: Callable[[Path], Any],
    unreadable: list[str],
) -> Any:
    """``reader(path)`` of the video's ``key`` output; None when missing or unreadable
    (then the path is appended to ``unreadable``)."""
    given = (entry.get("outputs") or {}).get(key)
    path = (
        Path(given)
        if given
        else output_dir / key / (entry["video_id"] + get_datatype(key).output_extension)
    )
    if not path.is_file():
        return None
    try:
        return reader(path)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        unreadable.append(str(path))
        return None


def _probe_duration(path: Path) -> float | None:
    """Seconds of a ``probe/{id}.json``: its ``duration_s``, else its longest stream's."""
    probe = json.loads(path.read_text(encoding="utf-8"))
    if probe.get("duration_s") is not None:
        return float(probe["duration_s"])
    streams = [s["duration_s"] for s in probe.get("streams", []) if s.get("duration_s")]
    return float(max(streams)) if streams else None


def _segment_seconds(path: Path) -> dict[str, Any]:
    """``kept_s`` (float) and ``dropped_s`` (reason -> float) of a ``segments/{id}.json``."""
    record = json.loads(path.read_text(encoding="utf-8"))
    dropped = {str(reason): float(s) for reason, s in record["dropped_s"].items()}
    return {"kept_s": float(record["kept_s"]), "dropped_s": dropped}


def _face_coverage(path: Path) -> float | None:
    """The ``coverage`` (fraction 0..1) of a ``faces/{id}.json``, or None."""
    coverage = json.loads(path.read_text(encoding="utf-8")).get("coverage")
    return None if coverage is None else float(coverage)


def _distribution(values: np.ndarray) -> dict[str, float] | None:
    """:data:`_STAT_NAMES` of the finite ``values`` (K,); None when there are none."""
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {
        "mean": float(values.mean()), "std": float(values.std()), "median": float(median),
        "p10": float(p10), "p90": float(p90),
    }  # fmt: skip


def _volume_stats(path: Path) -> dict[str, float] | None:
    """The distribution of a volume envelope ``.npy`` (T,)."""
    return _distribution(np.load(path, mmap_mode="r").astype(np.float64).ravel())


def _wav2vec_norm_stats(path: Path) -> dict[str, float] | None:
    """The distribution of the row L2 norms of a wav2vec ``.npy`` (T, D); ValueError when
    the array is not 2-D."""
    features = np.load(path, mmap_mode="r")
    if features.ndim != 2:
        raise ValueError(f"wav2vec features must be (T, D), not {features.shape}")
    # Chunked: a long clip's (T, 768) array need not be in memory at once.
    norms = np.concatenate(
        [
            np.linalg.norm(np.asarray(features[start : start + _WAV2VEC_CHUNK_ROWS], np.float64),
                           axis=1)
            for start in range(0, features.shape[0], _WAV2VEC_CHUNK_ROWS)
        ]
        or [np.zeros(0)]
    )  # fmt: skip
    return _distribution(norms)
