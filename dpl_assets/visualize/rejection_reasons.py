"""Rejection reasons of a run's videos: reading them off report entries and grouping them.

A report entry is one ``report.json`` video (``video_id``, ``source``, ``status``
processed / rejected / failed, ``reason``, ``reasons``, ...). Reasons are free text that
name the video and carry numbers ("/v/a.mp4: face in 37% of frames (min_face_coverage
50%)"); :func:`normalize_reason` reduces one to its cause so videos can be counted per
cause (:func:`rejection_counts`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dpl_assets.report import without_subject

_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?![A-Za-z_])")  # not the 2 of "wav2vec"
_PARENTHESES = re.compile(r"\s*\([^()]*\)")
_COVERAGE_REASON = re.compile(r"face in (\d+(?:\.\d+)?)% of frames")


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


def coverage_from_reasons(reasons: Sequence[str]) -> float | None:
    """Face coverage (fraction 0..1) read off the first reason that states it: "face in
    37% of frames" -> 0.37, "no face" -> 0.0; None when no reason does."""
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
