"""Training segments of a clip: the spans of frames worth keeping, and why the rest is not.

:func:`plan_segments` turns per-frame exclusion flags (no face, no speech, low quality, a
clip whose sync confidence is low...) and scene cuts into **kept segments** (frame ranges
``[start, end)`` between ``min_seconds`` and ``max_seconds``, longer runs split evenly)
and **dropped spans**, each with its reasons. Nothing is decided twice: the nodes that
measure (speech, scenes, faces, quality, sync) give the flags; this module only cuts.

Durations are measured on the frames' own timestamps (the container clock of
:mod:`dpl_assets.media.timeline`): a span ``[start, end)`` lasts from ``times[start]`` to
``times[end]`` (or, for a span that ends the clip, the last frame's time plus the frame
interval before it), so variable-frame-rate clips are measured as they play.

Reasons, in the order used to charge a dropped frame to one reason when it has several
(the per-reason seconds then add up to the dropped total): :data:`REASON_ORDER`; a run of
usable frames shorter than ``min_seconds`` is dropped as :data:`TOO_SHORT`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpl_assets.media.timeline import true_runs

NO_FACE = "no face"
NO_SPEECH = "no speech"
LOW_QUALITY = "low quality"
LOW_SYNC = "low sync confidence"
NOT_SPEAKING = "followed face not speaking"
TOO_SHORT = "too short"
REASON_ORDER = (NO_FACE, NO_SPEECH, LOW_QUALITY, LOW_SYNC, NOT_SPEAKING)
"""Known reasons, most basic first; other reasons a caller gives come after them."""


@dataclass
class SegmentPlan:
    """What :func:`plan_segments` decided for one clip.

    ``kept``: int64 (K, 2) ``[start, end)`` frame ranges, in order; ``dropped``: dropped
    spans in order, each ``{"start", "end", "reasons"}`` (frames ``[start, end)``; reasons
    as given, :data:`TOO_SHORT` for a usable run below ``min_seconds``); ``cuts``: the
    scene cuts used (frame indices); ``kept_s``/``dropped_s``: seconds kept, and dropped
    per reason (each dropped frame charged to its first reason in :data:`REASON_ORDER`).
    """

    kept: np.ndarray
    dropped: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    kept_s: float = 0.0
    dropped_s: dict[str, float] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """JSON-able record: the fields above, frames as ints, seconds rounded to 1 ms."""
        return {
            "kept": [[int(a), int(b)] for a, b in self.kept],
            "dropped": self.dropped,
            "cuts": self.cuts,
            "kept_s": round(self.kept_s, 3),
            "dropped_s": {reason: round(s, 3) for reason, s in self.dropped_s.items()},
        }


def frame_durations(times: np.ndarray) -> np.ndarray:
    """float64 (N,) seconds each frame lasts: to the next frame's time, the last one as long
    as the one before it (as :func:`~dpl_assets.media.frames.resample_frames` ends a clip;
    1/25 s for a single frame). ValueError when times do not increase."""
    times = np.asarray(times, np.float64)
    steps = np.diff(times)
    if np.any(steps <= 0):
        raise ValueError("frame times must increase")
    last = float(steps[-1]) if steps.size else 1 / 25
    return np.append(steps, last)


def _charged_reason(reasons: Sequence[str]) -> str:
    known = [reason for reason in REASON_ORDER if reason in reasons]
    return known[0] if known else sorted(reasons)[0]


def _split(
    start: int, end: int, durations: np.ndarray, min_seconds: float, max_seconds: float
) -> tuple[list[list[int]], list[int] | None]:
    """``[start, end)`` in the fewest pieces of at most ``max_seconds`` each, cut at the
    frames nearest equal shares of its time; the rest that is left over (None here) when
    equal shares would fall below ``min_seconds`` (possible when it is more than half of
    ``max_seconds``): then pieces of ``max_seconds`` and the remainder apart."""
    elapsed = np.concatenate([[0.0], np.cumsum(durations[start:end])])
    pieces = int(np.ceil(elapsed[-1] / max_seconds - 1e-9))
    if elapsed[-1] / pieces < min_seconds - 1e-9:
        bounds = [0]
        while elapsed[-1] - elapsed[bounds[-1]] > max_seconds + 1e-9:
            last = int(np.searchsorted(elapsed, elapsed[bounds[-1]] + max_seconds + 1e-9)) - 1
            bounds.append(last)
        whole = [[start + a, start + b] for a, b in itertools.pairwise(bounds)]
        return whole, [start + bounds[-1], end]
    while True:
        targets = elapsed[-1] * np.arange(1, pieces) / pieces
        bounds = [start, *(start + int(np.argmin(np.abs(elapsed - t))) for t in targets), end]
        lengths = [elapsed[b - start] - elapsed[a - start] for a, b in itertools.pairwise(bounds)]
        if max(lengths) <= max_seconds + 1e-9 and len(set(bounds)) == len(bounds):
            return [[a, b] for a, b in itertools.pairwise(bounds)], None
        pieces += 1  # rounding to whole frames overshot: one piece more


def plan_segments(
    frame_times: np.ndarray,
    excluded: Mapping[str, np.ndarray],
    cuts: Sequence[int] = (),
    *,
    min_seconds: float = 1.0,
    max_seconds: float = 10.0,
) -> SegmentPlan:
    """Kept segments and dropped spans of a clip of N frames.

    Args:
        frame_times: float64 (N,) frame timestamps, seconds, increasing.
        excluded: reason -> bool (N,), True where that reason rules the frame out.
        cuts: frames where a new shot starts (a segment never spans one); 0 and N ignored.
        min_seconds: usable runs shorter than this are dropped (:data:`TOO_SHORT`).
        max_seconds: longer runs are split into the fewest near-equal pieces within it.

    Raises ValueError for a mask that is not (N,), a cut outside the clip, times that do
    not increase, or ``max_seconds`` < ``min_seconds`` or not > 0.
    """
    times = np.asarray(frame_times, np.float64)
    count = times.shape[0]
    if not max_seconds > 0 or max_seconds < min_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    durations = frame_durations(times) if count else np.zeros(0)
    flags = {reason: np.asarray(mask, bool) for reason, mask in excluded.items()}
    if len(flags) > 64:
        raise ValueError(f"at most 64 exclusion reasons, got {len(flags)}")
    for reason, mask in flags.items():
        if mask.shape != (count,):
            raise ValueError(f"{reason!r} mask has shape {mask.shape}, the clip {count} frames")
    bad_cuts = [cut for cut in cuts if not 0 <= cut <= count]
    if bad_cuts:
        raise ValueError(f"scene cuts {bad_cuts} outside the clip's {count} frames")
    inner_cuts = sorted({int(cut) for cut in cuts if 0 < cut < count})

    usable = np.ones(count, bool)
    for mask in flags.values():
        usable &= ~mask
    plan = SegmentPlan(kept=np.zeros((0, 2), np.int64), cuts=inner_cuts)
    dropped_frames: list[tuple[int, int, list[str]]] = []
    # Runs of frames with the same set of reasons: one bit per reason, runs of equal codes.
    names = list(flags)
    codes = np.zeros(count, np.uint64)
    for bit, mask in enumerate(flags.values()):
        codes |= mask.astype(np.uint64) << np.uint64(bit)
    changes = (np.flatnonzero(codes[1:] != codes[:-1]) + 1).tolist()
    for start, end in itertools.pairwise([0, *changes, count] if count else []):
        code = int(codes[start])
        if code:
            dropped_frames.append((start, end, [n for k, n in enumerate(names) if code >> k & 1]))
    kept: list[list[int]] = []
    bounds = [0, *inner_cuts, count]
    starts, ends = true_runs(usable)
    for run_start, run_end in zip(starts.tolist(), ends.tolist(), strict=True):  # JSON ints
        pieces = [
            (max(run_start, a), min(run_end, b))
            for a, b in itertools.pairwise(bounds)
            if max(run_start, a) < min(run_end, b)
        ]
        for a, b in pieces:
            rest: list[int] | None = [a, b]
            if durations[a:b].sum() >= min_seconds - 1e-9:
                whole, rest = _split(a, b, durations, min_seconds, max_seconds)
                kept.extend(whole)
            if rest is not None:
                if durations[rest[0] : rest[1]].sum() >= min_seconds - 1e-9:
                    kept.append(rest)
                else:
                    dropped_frames.append((rest[0], rest[1], [TOO_SHORT]))
    dropped_frames.sort()
    plan.dropped = [{"start": a, "end": b, "reasons": reasons} for a, b, reasons in dropped_frames]
    plan.kept = np.asarray(kept, np.int64).reshape(-1, 2)
    plan.kept_s = float(sum(durations[a:b].sum() for a, b in kept))
    for a, b, reasons in dropped_frames:
        reason = _charged_reason(reasons)
        plan.dropped_s[reason] = plan.dropped_s.get(reason, 0.0) + float(durations[a:b].sum())
    return plan


def segment_ids(kept: np.ndarray, count: int) -> np.ndarray:
    """int32 (N,): the kept segment each of ``count`` frames belongs to, -1 for none."""
    ids = np.full(count, -1, np.int32)
    for index, (start, end) in enumerate(np.asarray(kept, np.int64).reshape(-1, 2)):
        ids[start:end] = index
    return ids


def long_silences(speech: np.ndarray, frame_times: np.ndarray, min_seconds: float) -> np.ndarray:
    """bool (N,): frames in a run without speech (``speech`` bool (N,) False) lasting at
    least ``min_seconds`` (:func:`frame_durations`); shorter pauses are not silences."""
    silent = ~np.asarray(speech, bool)
    durations = frame_durations(frame_times) if silent.size else np.zeros(0)
    for start, end in zip(*true_runs(silent), strict=True):
        if durations[start:end].sum() < min_seconds - 1e-9:
            silent[start:end] = False
    return silent
