"""Dataset summary: plots and a markdown digest of a run, from plain per-video records.

A record is one ``report.json`` video entry (``video_id``, ``source``, ``status``
processed / rejected / failed, ``reason``, ``reasons``, ``outputs``, ``stats``) plus
numbers read from the outputs by :func:`collect_summary_inputs`:

- ``reasons``: every rejection reason (``reason`` alone for an entry without the list);
- ``duration_s``: seconds, the report's ``stats`` (decoded frames) else
  ``probe/{id}.json``;
- ``face_coverage``: fraction of frames with a face (detected or gap filled), the report's
  ``stats`` else ``faces/{id}.json``; for a video rejected for its faces, read off the
  reason ("face in 37% of frames" -> 0.37, "no face" -> 0.0) so the histogram shows the cut;
- ``volume_*``: the loudness envelope ``volume/{id}.npy`` (T,): ``mean``, ``std``,
  ``median``, ``p10``, ``p90`` (10th and 90th percentiles);
- ``wav2vec_norm_*``: the same of the L2 norms of the rows of ``wav2vec/{id}.npy`` (T, D);
- ``unreadable``: paths of files that exist but could not be read.

:func:`summary_figures` draws the plots of :data:`PLOT_FILES` (matplotlib's Agg canvas, no
display, no pyplot state) from the records, so tests read what is plotted off the
figures' artists; :func:`summarize` writes them (each file atomic) and returns markdown for
Dagster's ``MetadataValue.md``. What they show:

- durations and face coverage: histograms stacked by status; the legend counts every video
  of each status, the ones without the number too ("rejected: 2 (1 without a duration)");
- rejections by reason: videos per normalised reason (:func:`normalize_reason`); a video
  rejected for two reasons counts under both;
- features: one panel per feature some video has (volume, wav2vec norms); per video, by
  id, the median and the 10th-90th percentile range (non-negative like the values).
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
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from dpl_assets.datatypes import get_datatype
from dpl_assets.report import without_subject
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

FEATURES = {
    "volume": "Volume (mean |x| per 20 ms)",
    "wav2vec_norm": "wav2vec feature L2 norm",
}
"""Feature record prefix -> panel title of the features plot."""
MAX_LABELLED_VIDEOS = 40
"""The features plot labels every video by id up to this many, else evenly spaced ones."""
SLANTED_LABELS = 10
"""Up to this many video labels are written slanted, more upright."""

_WAV2VEC_CHUNK_ROWS = 8192  # rows per read when norming a memory-mapped (T, D) array
_STAT_NAMES = ("mean", "std", "median", "p10", "p90")


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
    text = without_subject(reason, subjects)
    while _PARENTHESES.search(text):  # innermost first, so nesting is handled
        text = _PARENTHESES.sub("", text)
    text = text.split(": ", 1)[0]
    text = _NUMBER.sub("N", text)
    return re.sub(r"\s+", " ", text).strip(" ;,.") or "unknown"


_COVERAGE_REASON = re.compile(r"face in (\d+(?:\.\d+)?)% of frames")


def _coverage_from_reasons(reasons: Sequence[str]) -> float | None:
    for reason in reasons:
        match = _COVERAGE_REASON.search(reason)
        if match:
            return float(match.group(1)) / 100
        if normalize_reason(reason) == "no face":
            return 0.0
    return None


def reasons_of(video: Mapping[str, Any]) -> list[str]:
    """Every rejection reason of a report entry: its ``reasons``, else its ``reason``."""
    if video.get("reasons"):
        return [str(r) for r in video["reasons"]]
    reason = video.get("reason")
    return [str(reason)] if reason and video.get("status") == "rejected" else []


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
        coverage = _coverage_from_reasons(record["reasons"])
    record["face_coverage"] = None if coverage is None else float(coverage)
    for key, reader in (("volume", _volume_stats), ("wav2vec_norm", _wav2vec_norm_stats)):
        values = read("volume" if key == "volume" else "wav2vec", reader) or {}
        for name in _STAT_NAMES:
            record[f"{key}_{name}"] = values.get(name)
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


def _distribution(values: np.ndarray) -> dict[str, float] | None:
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {
        "mean": float(values.mean()), "std": float(values.std()), "median": float(median),
        "p10": float(p10), "p90": float(p90),
    }  # fmt: skip


def _volume_stats(path: Path) -> dict[str, float] | None:
    return _distribution(np.load(path, mmap_mode="r").astype(np.float64).ravel())


def _wav2vec_norm_stats(path: Path) -> dict[str, float] | None:
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


# --------------------------------------------------------------------------------------
# Plots and markdown
# --------------------------------------------------------------------------------------


def summary_figures(videos: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
    """The plots of :data:`PLOT_FILES` (name -> figure) for ``videos``, records as
    :func:`collect_summary_inputs` returns them (see the module docstring)."""
    return {
        "durations": _durations_figure(videos),
        "face_coverage": _coverage_figure(videos),
        "rejections": _rejections_figure(rejection_counts(videos)),
        "features": _features_figure(videos),
    }


def rejection_counts(videos: Sequence[Mapping[str, Any]]) -> Counter[str]:
    """Rejected videos per normalised reason; a video counts once under each of its causes."""
    counts: Counter[str] = Counter()
    for video in videos:
        if video.get("status") != "rejected":
            continue
        subjects = (video.get("source"), video.get("video_id"))
        causes = {normalize_reason(r, subjects=subjects) for r in reasons_of(video)}
        counts.update(causes or {"unknown"})
    return counts


def summarize(videos: Sequence[Mapping[str, Any]], plot_dir: Path) -> str:
    """Write the :data:`PLOT_FILES` into ``plot_dir`` and return a markdown digest.

    ``videos``: records as :func:`collect_summary_inputs` returns them (plain report
    entries work too: missing numbers are skipped). The markdown has a table of videos per
    status, a table of rejections per normalised reason (:func:`normalize_reason`), the
    total duration, and links (``file://`` URIs) to the plots.
    """
    plot_dir = Path(plot_dir)
    statuses = Counter(str(v.get("status")) for v in videos)
    paths = {name: plot_dir / file_name for name, file_name in PLOT_FILES.items()}
    for name, figure in summary_figures(videos).items():
        _save(figure, paths[name])
    return _markdown(videos, statuses, rejection_counts(videos), paths)


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
    videos: Sequence[Mapping[str, Any]],
    key: str,
    title: str,
    xlabel: str,
    missing: str,
    **hist: Any,
) -> Figure:
    """Values under ``key`` stacked by status. The legend names every status that has
    videos with its full count, and how many of them have no value (``missing`` says what
    they lack), so it always agrees with the report."""
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    statuses = [*STATUSES, *sorted({str(v.get("status")) for v in videos} - set(STATUSES))]
    groups = [(s, _values(videos, key, s)) for s in statuses]
    drawn = [(s, values) for s, values in groups if values]
    if drawn:
        axes.hist(
            [values for _, values in drawn],
            stacked=True,
            color=[STATUS_COLORS.get(s, "tab:gray") for s, _ in drawn],
            **hist,
        )
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _no_data(axes)
    handles = []
    for status, values in groups:
        total = sum(str(v.get("status")) == status for v in videos)
        if not total:
            continue
        label = f"{status}: {total}"
        if total > len(values):
            label += f" ({total - len(values)} without {missing})"
        handles.append(Patch(color=STATUS_COLORS.get(status, "tab:gray"), label=label))
    if handles:
        axes.legend(handles=handles, title="videos")
    axes.set(title=title, xlabel=xlabel, ylabel="videos")
    return figure


def _durations_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    return _by_status_histogram(
        videos, "duration_s", "Video durations", "duration (s)", "a duration", bins="auto"
    )


def _coverage_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    return _by_status_histogram(
        videos, "face_coverage", "Face coverage", "fraction of frames with the face",
        "face data", bins=20, range=(0.0, 1.0),
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
    axes.set(title="Rejections by reason (a video counts under each of its reasons)",
             xlabel="videos")  # fmt: skip
    return figure


def feature_points(
    videos: Sequence[Mapping[str, Any]], key: str
) -> list[tuple[str, float, float, float]]:
    """``(video_id, p10, median, p90)`` of feature ``key`` per video that has it, sorted by
    median (what the features plot draws)."""
    points: list[tuple[str, float, float, float]] = []
    for video in videos:
        given = [video.get(f"{key}_{name}") for name in ("p10", "median", "p90")]
        values = [float(v) for v in given if v is not None]
        if len(values) == 3 and all(math.isfinite(v) for v in values):
            points.append((str(video.get("video_id")), values[0], values[1], values[2]))
    return sorted(points, key=lambda point: (point[2], point[0]))


def _features_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    panels = [(key, title, pts) for key, title in FEATURES.items()
              if (pts := feature_points(videos, key))]  # fmt: skip
    if not panels:
        figure = Figure(figsize=(7.5, 3.0), layout="constrained")
        axes = figure.add_subplot()
        _no_data(axes, "no audio features (volume, wav2vec)")
        axes.set(title="Feature statistics", xticks=[], yticks=[])
        return figure
    figure = Figure(figsize=(7.5, 1.5 + 3.5 * len(panels)), layout="constrained")
    for row, (_, title, points) in enumerate(panels, start=1):
        axes = figure.add_subplot(len(panels), 1, row)
        ids = [point[0] for point in points]
        low, median, high = (np.array([point[i] for point in points]) for i in (1, 2, 3))
        x = np.arange(len(points))
        axes.errorbar(
            x, median, yerr=np.stack([median - low, high - median]), fmt="o", markersize=3,
            capsize=2, elinewidth=0.8, label="per-video median, bar: 10th-90th percentile",
        )  # fmt: skip
        axes.legend(loc="upper left", fontsize="small")
        shown = x if len(x) <= MAX_LABELLED_VIDEOS else np.unique(
            np.linspace(0, len(x) - 1, MAX_LABELLED_VIDEOS).round().astype(int)
        )  # fmt: skip
        # Few labels lean (they read easily), many stand upright (they do not overlap).
        upright = len(shown) > SLANTED_LABELS
        axes.set_xticks(shown, [ids[i] for i in shown], rotation=90 if upright else 30,
                        ha="center" if upright else "right", fontsize="small")  # fmt: skip
        axes.set(title=title, xlabel="video (sorted by median)")
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
            f"min in all ({len(durations)} of {len(videos)} videos have a duration).",
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
