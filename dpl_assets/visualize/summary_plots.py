"""The dataset summary's plots, drawn from per-video records on matplotlib's Agg canvas.

Records are those of :func:`~dpl_assets.visualize.summary_inputs.collect_summary_inputs`
(plain report entries work too: missing numbers are skipped). :func:`summary_figures`
returns the figures of :data:`PLOT_FILES` (no display, no pyplot state), so tests read what
is plotted off the figures' artists. What they show:

- durations and face coverage: histograms stacked by status; the legend counts every video
  of each status, the ones without the number too ("rejected: 2 (1 without a duration)");
- rejections by reason: videos per normalised reason
  (:func:`~dpl_assets.visualize.rejection_reasons.normalize_reason`); a video rejected for
  two reasons counts under both;
- features: one panel per feature some video has (volume, wav2vec norms); per video, by
  id, the median and the 10th-90th percentile range (non-negative like the values).
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from dpl_assets.visualize.rejection_reasons import rejection_counts
from dpl_assets.visualize.summary_inputs import STATUSES, finite_values

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


def summary_figures(videos: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
    """The plots of :data:`PLOT_FILES` (name -> figure) for ``videos``, records as
    :func:`~dpl_assets.visualize.summary_inputs.collect_summary_inputs` returns them (see
    the module docstring)."""
    return {
        "durations": _durations_figure(videos),
        "face_coverage": _coverage_figure(videos),
        "rejections": _rejections_figure(rejection_counts(videos)),
        "features": _features_figure(videos),
    }


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
    groups = [(s, finite_values(videos, key, s)) for s in statuses]
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
    """Horizontal bars of videos per reason, the most common on top; ties in the reasons'
    order, so the picture does not depend on which step rejected a video first."""
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
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


def _features_figure(videos: Sequence[Mapping[str, Any]]) -> Figure:
    """One panel per feature of :data:`FEATURES` that some video has (see the module
    docstring), or a "no audio features" panel."""
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
        _feature_panel(figure.add_subplot(len(panels), 1, row), title, points)
    return figure


def _feature_panel(axes: Axes, title: str, points: list[tuple[str, float, float, float]]) -> None:
    """Per-video median and 10th-90th percentile bar of :func:`feature_points`, by id."""
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


def _no_data(axes: Axes, text: str = "no data") -> None:
    """``text`` in the middle of an empty ``axes``."""
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
