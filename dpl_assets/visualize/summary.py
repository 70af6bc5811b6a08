"""Dataset summary: plots and a markdown digest of a run, from plain per-video records.

A record is one ``report.json`` video entry (``video_id``, ``source``, ``status``
processed / rejected / failed, ``reason``, ``outputs``) plus optional numbers read from
the outputs by :func:`collect_summary_inputs`:

- ``duration_s``: seconds, from ``probe/{id}.json``;
- ``face_coverage``: fraction of frames with a face (detected or gap filled), from
  ``faces/{id}.json``; for a video rejected for its faces, read off the reason
  ("face in 37% of frames" -> 0.37, "no face" -> 0.0) so the histogram shows the cut;
- ``volume_mean``, ``volume_std``: the loudness envelope ``volume/{id}.npy`` (T,);
- ``wav2vec_norm_mean``, ``wav2vec_norm_std``: L2 norms of the rows of ``wav2vec/{id}.npy``
  (T, D);
- ``unreadable``: paths of files that exist but could not be read.

:func:`summarize` writes the PNG plots of :data:`PLOT_FILES` (matplotlib's Agg canvas,
no display, no pyplot state; each file atomic) and returns markdown for Dagster's
``MetadataValue.md``.
"""

from __future__ import annotations

import io
import json
import math
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dpl_assets.datatypes import get_datatype
from dpl_assets.storage.atomic import atomic_write_bytes

STATUSES = ("processed", "rejected", "failed")
STATUS_COLORS = {"processed": "tab:green", "rejected": "tab:orange", "failed": "tab:red"}
PLOT_FILES = {
    "durations": "durations.png",
    "face_coverage": "face_coverage.png",
    "rejections": "rejections.png",
    "features": "features.png",
}
"""Plot name -> file name in the plot folder (the same four files every time)."""

_WAV2VEC_CHUNK_ROWS = 8192  # rows per read when norming a memory-mapped (T, D) array


# --------------------------------------------------------------------------------------
# Reasons
# --------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?![A-Za-z_])")  # not the 2 of "wav2vec"
_PARENTHESES = re.compile(r"\s*\([^()]*\)")


def normalize_reason(reason: str, *, subjects: Iterable[str | None] = ()) -> str:
    """The cause of a rejection, without the file it names or its numbers.

    ``subjects`` (the video's source path and id) are stripped where the reason starts
    with one of them and ": "; a leading path is stripped anyway. Then parenthesised
    details are dropped, only the text before the first ": " is kept (the cause's
    heading; details follow), and numbers become ``N``:
    "face in 37% of frames (min_face_coverage 50%)" -> "face in N% of frames",
    "/v/a.mp4: truncated: the header promises ..." -> "truncated".
    """
    text = reason.strip()
    for subject in sorted((s for s in subjects if s), key=len, reverse=True):
        if text.startswith(subject + ": "):
            text = text[len(subject) + 2 :]
            break
    else:
        head, colon, rest = text.partition(": ")
        if colon and ("/" in head or "\\" in head):
            text = rest
    while _PARENTHESES.search(text):  # innermost first, so nesting is handled
        text = _PARENTHESES.sub("", text)
    text = text.split(": ", 1)[0]
    text = _NUMBER.sub("N", text)
    return re.sub(r"\s+", " ", text).strip(" ;,.") or "unknown"


_COVERAGE_REASON = re.compile(r"face in (\d+(?:\.\d+)?)% of frames")


def _coverage_from_reason(reason: str | None) -> float | None:
    if not reason:
        return None
    match = _COVERAGE_REASON.search(reason)
    if match:
        return float(match.group(1)) / 100
    return 0.0 if normalize_reason(reason) == "no face" else None


# --------------------------------------------------------------------------------------
# Reading the numbers
# --------------------------------------------------------------------------------------


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


def _summary_record(output_dir: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = dict(entry)
    unreadable: list[str] = []

    def read(key: str, reader: Callable[[Path], Any]) -> Any:
        return _read_output(output_dir, entry, key, reader, unreadable)

    record["duration_s"] = read("probe", _probe_duration)
    coverage = read("faces", _face_coverage)
    if coverage is None and entry.get("status") == "rejected":
        coverage = _coverage_from_reason(entry.get("reason"))
    record["face_coverage"] = coverage
    record["volume_mean"], record["volume_std"] = read("volume", _volume_stats) or (None, None)
    record["wav2vec_norm_mean"], record["wav2vec_norm_std"] = read(
        "wav2vec", _wav2vec_norm_stats
    ) or (None, None)
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
    probe = json.loads(path.read_text(encoding="utf-8"))
    if probe.get("duration_s") is not None:
        return float(probe["duration_s"])
    streams = [s["duration_s"] for s in probe.get("streams", []) if s.get("duration_s")]
    return float(max(streams)) if streams else None


def _face_coverage(path: Path) -> float | None:
    coverage = json.loads(path.read_text(encoding="utf-8")).get("coverage")
    return None if coverage is None else float(coverage)


def _volume_stats(path: Path) -> tuple[float, float] | None:
    volume = np.load(path, mmap_mode="r").astype(np.float64).ravel()
    volume = volume[np.isfinite(volume)]
    return (float(volume.mean()), float(volume.std())) if volume.size else None


def _wav2vec_norm_stats(path: Path) -> tuple[float, float] | None:
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
    norms = norms[np.isfinite(norms)]
    return (float(norms.mean()), float(norms.std())) if norms.size else None


# --------------------------------------------------------------------------------------
# Plots and markdown
# --------------------------------------------------------------------------------------


def summarize(videos: Sequence[Mapping[str, Any]], plot_dir: Path) -> str:
    """Write the :data:`PLOT_FILES` into ``plot_dir`` and return a markdown digest.

    ``videos``: records as :func:`collect_summary_inputs` returns them (plain report
    entries work too: missing numbers are skipped). The markdown has a table of videos per
    status, a table of rejections per normalised reason (:func:`normalize_reason`), the
    total duration, and links (``file://`` URIs) to the plots.
    """
    plot_dir = Path(plot_dir)
    statuses = Counter(str(v.get("status")) for v in videos)
    reasons = Counter(
        normalize_reason(str(v.get("reason") or ""), subjects=(v.get("source"), v.get("video_id")))
        for v in videos
        if v.get("status") == "rejected"
    )
    paths = {name: plot_dir / file_name for name, file_name in PLOT_FILES.items()}
    _save(_durations_figure(videos), paths["durations"])
    _save(_coverage_figure(videos), paths["face_coverage"])
    _save(_rejections_figure(reasons), paths["rejections"])
    _save(_features_figure(videos), paths["features"])
    return _markdown(videos, statuses, reasons, paths)


def _values(videos: Sequence[Mapping[str, Any]], key: str, status: str | None = None) -> list:
    """Finite numbers under ``key`` (of videos with ``status`` when given)."""
    return [
        float(v[key])
        for v in videos
        if v.get(key) is not None
        and math.isfinite(float(v[key]))
        and (status is None or v.get("status") == status)
    ]


def _by_status_histogram(
    videos: Sequence[Mapping[str, Any]], key: str, title: str, xlabel: str, **hist: Any
) -> Figure:
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    groups = [(s, _values(videos, key, s)) for s in STATUSES]
    groups = [(s, values) for s, values in groups if values]
    if groups:
        axes.hist(
            [values for _, values in groups],
            stacked=True,
            label=[f"{s} ({len(values)})" for s, values in groups],
            color=[STATUS_COLORS[s] for s, _ in groups],
            **hist,
        )
        axes.legend()
    else:
        _no_data(axes)
    axes.set(title=title, xlabel=xlabel, ylabel="videos")
    return figure


def _durations_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    return _by_status_histogram(
        videos, "duration_s", "Video durations", "duration (s)", bins="auto"
    )


def _coverage_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    return _by_status_histogram(
        videos, "face_coverage", "Face coverage", "fraction of frames with the face",
        bins=20, range=(0.0, 1.0),
    )  # fmt: skip


def _rejections_figure(reasons: Counter[str]) -> Figure:
    ranked = reasons.most_common()
    figure = Figure(figsize=(7.5, 1.5 + 0.45 * max(1, len(ranked))), layout="constrained")
    axes = figure.add_subplot()
    if ranked:
        labels = [textwrap.fill(reason, 40) for reason, _ in ranked]
        counts = [count for _, count in ranked]
        bars = axes.barh(labels, counts, color=STATUS_COLORS["rejected"])
        axes.invert_yaxis()  # the most common reason on top
        axes.bar_label(bars)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(axes, "no rejections")
    axes.set(title="Rejections by reason", xlabel="videos")
    return figure


def _features_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    figure = Figure(figsize=(7.5, 6.0), layout="constrained")
    panels = (
        ("volume", "Volume (mean |x| per 20 ms)"),
        ("wav2vec_norm", "wav2vec feature L2 norm"),
    )
    for row, (key, title) in enumerate(panels, start=1):
        axes = figure.add_subplot(2, 1, row)
        pairs = [
            (float(v[f"{key}_mean"]), float(v.get(f"{key}_std") or 0.0))
            for v in videos
            if v.get(f"{key}_mean") is not None and math.isfinite(float(v[f"{key}_mean"]))
        ]
        if pairs:
            means, stds = np.array(sorted(pairs)).T
            axes.errorbar(
                np.arange(means.size), means, yerr=stds, fmt="o", markersize=3, capsize=2,
                elinewidth=0.8, label="per-video mean ± std",
            )  # fmt: skip
            axes.legend(loc="upper left")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            _no_data(axes)
        axes.set(title=title, xlabel="videos, sorted by mean")
    return figure


def _no_data(axes: Axes, text: str = "no data") -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)  # render with Agg explicitly: no display, no pyplot state
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(
    videos: Sequence[Mapping[str, Any]],
    statuses: Counter[str],
    reasons: Counter[str],
    paths: Mapping[str, Path],
) -> str:
    lines = ["| status | videos |", "|---|---:|"]
    lines += [f"| {status} | {statuses.get(status, 0)} |" for status in STATUSES]
    others = sum(count for status, count in statuses.items() if status not in STATUSES)
    if others:
        lines.append(f"| other | {others} |")
    lines += [f"| **total** | {len(videos)} |", ""]
    if reasons:
        lines += ["**Rejections by reason**", "", "| reason | videos |", "|---|---:|"]
        lines += [f"| {_cell(reason)} | {count} |" for reason, count in reasons.most_common()]
        lines.append("")
    durations = _values(videos, "duration_s")
    processed = _values(videos, "duration_s", "processed")
    if durations:
        lines += [
            f"Duration: {sum(processed) / 60:.1f} min processed of {sum(durations) / 60:.1f} "
            f"min probed ({len(durations)} videos).",
            "",
        ]
    unreadable = sum(len(v.get("unreadable") or ()) for v in videos)
    if unreadable:
        lines += [f"{unreadable} output file(s) could not be read.", ""]
    titles = {
        "durations": "durations",
        "face_coverage": "face coverage",
        "rejections": "rejections by reason",
        "features": "feature statistics",
    }
    links = [f"[{titles[name]}]({path.resolve().as_uri()})" for name, path in paths.items()]
    lines.append("Plots: " + ", ".join(links))
    return "\n".join(lines) + "\n"
