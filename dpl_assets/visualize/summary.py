"""Dataset summary: plots and a markdown digest of a run, from plain per-video records.

The pieces:

- :mod:`~dpl_assets.visualize.summary_inputs`: :func:`collect_summary_inputs` reads each
  ``report.json`` video entry's numbers (duration, face coverage, feature statistics) off
  the report and the outputs;
- :mod:`~dpl_assets.visualize.rejection_reasons`: rejection reasons per entry,
  :func:`normalize_reason` and the counts per cause;
- :mod:`~dpl_assets.visualize.summary_plots`: :func:`summary_figures`, the figures of
  :data:`PLOT_FILES` (matplotlib's Agg canvas, no display, no pyplot state).

:func:`summarize` writes the plots (each file atomic) and returns markdown for Dagster's
``MetadataValue.md``.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dpl_assets.storage.atomic import atomic_write_bytes
from dpl_assets.visualize.rejection_reasons import normalize_reason, reasons_of, rejection_counts
from dpl_assets.visualize.summary_inputs import STATUSES, collect_summary_inputs, finite_values
from dpl_assets.visualize.summary_plots import (
    FEATURES,
    MAX_LABELLED_VIDEOS,
    PLOT_FILES,
    STATUS_COLORS,
    feature_points,
    summary_figures,
)

__all__ = [
    "FEATURES",
    "MAX_LABELLED_VIDEOS",
    "PLOT_FILES",
    "PLOT_TITLES",
    "STATUSES",
    "STATUS_COLORS",
    "collect_summary_inputs",
    "feature_points",
    "normalize_reason",
    "reasons_of",
    "rejection_counts",
    "summarize",
    "summary_figures",
]

PLOT_TITLES = {
    "durations": "durations",
    "face_coverage": "face coverage",
    "rejections": "rejections by reason",
    "features": "feature statistics",
}
"""Plot name -> its link text in the markdown."""


def summarize(videos: Sequence[Mapping[str, Any]], plot_dir: Path) -> str:
    """Write the :data:`PLOT_FILES` into ``plot_dir`` and return a markdown digest.

    ``videos``: records as :func:`collect_summary_inputs` returns them (plain report
    entries work too: missing numbers are skipped). The markdown has a table of videos per
    status, a table of rejections per normalised reason (:func:`normalize_reason`), the
    total duration, and links (``file://`` URIs) to the plots. OSError when a plot cannot
    be written.
    """
    plot_dir = Path(plot_dir)
    statuses = Counter(str(v.get("status")) for v in videos)
    paths = {name: plot_dir / file_name for name, file_name in PLOT_FILES.items()}
    for name, figure in summary_figures(videos).items():
        _save(figure, paths[name])
    return _markdown(videos, statuses, rejection_counts(videos), paths)


def _save(figure: Figure, path: Path) -> None:
    """``figure`` as a 100 dpi PNG at ``path``, written atomically."""
    FigureCanvasAgg(figure)  # render with Agg explicitly: no display, no pyplot state
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def _cell(text: str) -> str:
    """``text`` safe in a markdown table cell (pipes escaped, one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _segment_lines(videos: Sequence[Mapping[str, Any]]) -> list[str]:
    """Seconds kept and dropped per reason over the videos with training segments."""
    segmented = [v for v in videos if v.get("segment_kept_s") is not None]
    if not segmented:
        return []
    dropped: Counter[str] = Counter()
    for video in segmented:
        dropped.update(video.get("segment_dropped_s") or {})
    kept = sum(float(v["segment_kept_s"]) for v in segmented)
    total = kept + sum(dropped.values())
    lines = [f"**Training segments** ({len(segmented)} videos)", "",
             "| | seconds | share |", "|---|---:|---:|",
             f"| kept | {kept:.1f} | {100 * kept / total if total else 0:.0f} % |"]  # fmt: skip
    ranked = sorted(dropped.items(), key=lambda item: (-item[1], item[0]))
    lines += [
        f"| dropped: {_cell(reason)} | {s:.1f} | {100 * s / total if total else 0:.0f} % |"
        for reason, s in ranked
    ]
    return [*lines, ""]


def _markdown(
    videos: Sequence[Mapping[str, Any]],
    statuses: Counter[str],
    reasons: Counter[str],
    paths: Mapping[str, Path],
) -> str:
    """The digest: status table, reason table, durations, unreadable files, plot links."""
    lines = ["| status | videos |", "|---|---:|"]
    lines += [f"| {status} | {statuses.get(status, 0)} |" for status in STATUSES]
    others = sum(count for status, count in statuses.items() if status not in STATUSES)
    if others:
        lines.append(f"| other | {others} |")
    lines += [f"| **total** | {len(videos)} |", ""]
    if reasons:
        lines += ["**Rejections by reason**", "", "| reason | videos |", "|---|---:|"]
        ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))  # ties: by name
        lines += [f"| {_cell(reason)} | {count} |" for reason, count in ranked]
        lines.append("")
    durations = finite_values(videos, "duration_s")
    processed = finite_values(videos, "duration_s", "processed")
    if durations:
        lines += [
            f"Duration: {sum(processed) / 60:.1f} min processed of {sum(durations) / 60:.1f} "
            f"min in all ({len(durations)} of {len(videos)} videos have a duration).",
            "",
        ]
    lines += _segment_lines(videos)
    unreadable = sum(len(v.get("unreadable") or ()) for v in videos)
    if unreadable:
        lines += [f"{unreadable} output file(s) could not be read.", ""]
    links = [f"[{PLOT_TITLES[name]}]({path.resolve().as_uri()})" for name, path in paths.items()]
    lines.append("Plots: " + ", ".join(links))
    return "\n".join(lines) + "\n"
