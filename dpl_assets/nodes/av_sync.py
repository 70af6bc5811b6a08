"""Audio-visual offset and the speaking face, by correlating mouth motion with the voice.

For each face track a mouth-opening signal per frame (:func:`mouth_opening`: the inner-lip
gap, points 62-66 of the iBUG 68, over the outer eye-corner distance 36-45) is
cross-correlated with the audio's activity on the same frames (:func:`audio_activity`:
the loudness envelope, times the speech probability when there is one), both first
differenced (opening and closing against the voice rising and falling, free of each
signal's slow drift) and standardized. The correlation is Pearson's over the frames both
have, for every lag in ``-max_lag .. +max_lag`` frames (:func:`lag_curve`).

**Lag convention**: lag ``k > 0`` means the audio is *late*: the sound that goes with
frame ``i`` is heard at frame ``i + k``. Shifting the audio ``k`` frames earlier
(a packer's ``av_offset``, :mod:`dpl_assets.packing.av_offset`) puts it in sync. (SyncNet's
``syncnet_python`` prints ``offset = -k``.)

**Confidence**, as SyncNet reports it (Chung & Zisserman, "Out of time: automated lip sync
in the wild", ACCV 2016 workshops; ``SyncNetInstance.evaluate``: ``median(dist) -
min(dist)`` over the offsets): the peak correlation minus the median correlation over
the lags. A mouth that follows the voice gives one sharp peak (high); a still mouth or
the wrong face gives a flat, noisy curve (low). The speaking track is the one with the
highest confidence (:func:`sync_tracks`).

**Significance**: on a short clip, the best of 31 lags of two unrelated signals is high by
chance (each lag's correlation spreads as 1/sqrt(n) over n frame pairs: ~0.25 on 4 s at 25
fps, as much as the confidence threshold). ``significance`` is that peak in standard
deviations of chance: peak x sqrt(n / f), f = 1 + 2 sum_j r_m(j) r_a(j) the Bartlett
factor of the two signals' autocorrelations r (lags 1..:data:`BARTLETT_LAGS`; signals
whose changes are themselves correlated spread wider by chance); a clip is in sync only
when it is at least :data:`MIN_SIGNIFICANCE` too. Measured (5 s talking photos of the
tests): audio shifted -5/0/+7 frames 5.9-6.0, the speaking face of two 7.1 and the other
1.7, a still mouth 0.5; the sample media's still photos (zoom and sway, no lip motion,
4 s): 2.0-2.5, with confidences up to 0.26 (above ``min_confidence`` by chance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LAG_CONVENTION = "positive = audio late (heard after the mouth moves), in frames"
DEFAULT_MAX_LAG_FRAMES = 15
MIN_OVERLAP_FRAMES = 10  # fewer frame pairs at a lag: no correlation there
MIN_SIGNIFICANCE = 4.0  # chance peaks over 31 lags: ~1 clip in 1,000 (white noise)
BARTLETT_LAGS = 10
UPPER_LIP, LOWER_LIP = 62, 66  # inner-lip midpoints, iBUG 68 (0-based)
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap over face size per frame: ``|p62 - p66| / |p36 - p45|`` of 68 iBUG
    landmarks (N, 68, 2) px -> float32 (N,) (about 0 shut, 0.1-0.4 open). The outer eye
    corners scale it (they do not move with the jaw, unlike the box); NaN where a frame's
    points are NaN or the eyes coincide."""
    points = np.asarray(landmarks, np.float64)
    gap = np.linalg.norm(points[:, UPPER_LIP] - points[:, LOWER_LIP], axis=-1)
    eyes = np.linalg.norm(points[:, LEFT_EYE_OUTER] - points[:, RIGHT_EYE_OUTER], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(eyes > 1e-6, gap / eyes, np.nan)
    return ratio.astype(np.float32)


def audio_activity(volume: np.ndarray, speech: np.ndarray | None = None) -> np.ndarray:
    """Audio activity per frame, float64 (N,): the loudness ``volume`` (N,) (mean |x| on
    the frames), times the speech probability ``speech`` (N,) in [0, 1] when given, so
    loud non-speech (music, noise) counts less. ValueError when the shapes differ."""
    activity = np.asarray(volume, np.float64)
    if speech is not None:
        probability = np.asarray(speech, np.float64)
        if probability.shape != activity.shape:
            raise ValueError(f"speech {probability.shape} and volume {activity.shape} differ")
        activity = activity * np.clip(probability, 0.0, 1.0)
    return activity


def _standardized_steps(signal: np.ndarray) -> np.ndarray:
    """First differences of ``signal`` (N,) (NaN where either frame is NaN), minus their
    mean over the finite values, over their standard deviation: float64 (N,), the first
    frame NaN. All NaN when fewer than 2 differences are finite or they do not vary."""
    values = np.asarray(signal, np.float64)
    steps = np.full(values.shape, np.nan)
    steps[1:] = np.diff(values)
    finite = np.isfinite(steps)
    spread = float(steps[finite].std()) if finite.sum() >= 2 else 0.0
    if spread <= 1e-12:
        return np.full(values.shape, np.nan)
    steps[finite] = (steps[finite] - steps[finite].mean()) / spread
    return steps


def lag_curve(
    mouth: np.ndarray, activity: np.ndarray, max_lag: int = DEFAULT_MAX_LAG_FRAMES
) -> np.ndarray:
    """Pearson correlation of the mouth's and the audio's standardized frame-to-frame
    changes at each lag ``-max_lag .. max_lag`` frames: float64 (2 * max_lag + 1,).

    ``mouth`` (N,) (NaN where the face is absent) and ``activity`` (N,) are on the same
    frames. Entry ``max_lag + k`` pairs ``mouth[i]`` with ``activity[i + k]`` (lag
    convention in the module docstring), over the frames where both are finite; NaN where
    fewer than :data:`MIN_OVERLAP_FRAMES` are. ValueError for different lengths or a
    negative ``max_lag``."""
    if np.shape(mouth) != np.shape(activity) or np.ndim(mouth) != 1:
        raise ValueError(f"mouth {np.shape(mouth)} and activity {np.shape(activity)} must be (N,)")
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, not {max_lag}")
    m, a = _standardized_steps(mouth), _standardized_steps(activity)
    n = m.size
    curve = np.full(2 * max_lag + 1, np.nan)
    for index, lag in enumerate(range(-max_lag, max_lag + 1)):
        first, last = max(0, -lag), min(n, n - lag)  # mouth frames i with 0 <= i + lag < n
        if last - first < MIN_OVERLAP_FRAMES:
            continue
        x, y = m[first:last], a[first + lag : last + lag]
        both = np.isfinite(x) & np.isfinite(y)
        if both.sum() < MIN_OVERLAP_FRAMES:
            continue
        x, y = x[both] - x[both].mean(), y[both] - y[both].mean()
        norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
        curve[index] = float((x * y).sum() / norm) if norm > 0 else 0.0
    return curve


@dataclass(frozen=True)
class TrackSync:
    """One track against the audio: ``curve`` (2 * max_lag + 1,) correlation (or distance,
    :meth:`of_distances`) per lag (NaN where not enough frames), ``best_lag`` frames (lag
    convention above), ``peak`` (the best value) and ``median`` of the curve,
    ``confidence`` = their difference, best minus median for correlations, median minus
    best for distances (0 when the curve is empty); ``significance``: for correlations,
    ``peak * sqrt(pairs)`` (see the module docstring), NaN for distances."""

    curve: np.ndarray
    best_lag: int
    peak: float
    median: float
    confidence: float
    significance: float = float("nan")

    @classmethod
    def of(cls, curve: np.ndarray, pairs: float = 0.0) -> TrackSync:
        """The best lag, confidence and significance of a lag curve (see
        :func:`lag_curve`) over ``pairs`` effective frame pairs (n / f, see the module)."""
        max_lag = (curve.size - 1) // 2
        if not np.isfinite(curve).any():
            return cls(curve, 0, float("nan"), float("nan"), 0.0, 0.0)
        best = int(np.nanargmax(curve))
        peak, median = float(curve[best]), float(np.nanmedian(curve))
        return cls(curve, best - max_lag, peak, median, peak - median, peak * np.sqrt(pairs))

    def in_sync(self, min_confidence: float) -> bool:
        """Confidence at least ``min_confidence`` and, for correlations, significance at
        least :data:`MIN_SIGNIFICANCE`."""
        significant = np.isnan(self.significance) or self.significance >= MIN_SIGNIFICANCE
        return bool(self.confidence >= min_confidence and significant)

    @classmethod
    def of_distances(cls, curve: np.ndarray) -> TrackSync:
        """The best lag and confidence of a curve of distances per lag (SyncNet's: lower
        is closer): ``peak`` is the minimum distance, confidence = median - minimum."""
        max_lag = (curve.size - 1) // 2
        if not np.isfinite(curve).any():
            return cls(curve, 0, float("nan"), float("nan"), 0.0)
        best = int(np.nanargmin(curve))
        low, median = float(curve[best]), float(np.nanmedian(curve))
        return cls(curve, best - max_lag, low, median, median - low)


def _autocorrelation(steps: np.ndarray, lags: int) -> np.ndarray:
    """Autocorrelation (lags,) of standardized ``steps`` at lags 1..``lags`` over the
    finite pairs (0 where fewer than :data:`MIN_OVERLAP_FRAMES`)."""
    out = np.zeros(lags)
    for lag in range(1, lags + 1):
        x, y = steps[:-lag], steps[lag:]
        both = np.isfinite(x) & np.isfinite(y)
        if both.sum() >= MIN_OVERLAP_FRAMES:
            out[lag - 1] = float(np.corrcoef(x[both], y[both])[0, 1])
    return np.nan_to_num(out)


def effective_pairs(mouth: np.ndarray, activity: np.ndarray) -> float:
    """n / f: the frame pairs both signals' changes have (n), over the Bartlett factor f of
    their autocorrelations (see the module docstring; f at least 1/2)."""
    m, a = _standardized_steps(mouth), _standardized_steps(activity)
    pairs = int((np.isfinite(m) & np.isfinite(a)).sum())
    if pairs < MIN_OVERLAP_FRAMES:
        return 0.0
    factor = 1 + 2 * float(
        np.dot(_autocorrelation(m, BARTLETT_LAGS), _autocorrelation(a, BARTLETT_LAGS))
    )
    return pairs / max(factor, 0.5)


def sync_tracks(
    mouths: Sequence[np.ndarray], activity: np.ndarray, max_lag: int = DEFAULT_MAX_LAG_FRAMES
) -> tuple[list[TrackSync], int | None]:
    """Each track's :class:`TrackSync` (mouth openings (N,) per track, NaN where the track
    is absent, against ``activity`` (N,)) and the index of the speaking track: the highest
    confidence (the first of equals; None when no track has a finite curve)."""
    results = [
        TrackSync.of(lag_curve(mouth, activity, max_lag), effective_pairs(mouth, activity))
        for mouth in mouths
    ]
    scored = [i for i, r in enumerate(results) if np.isfinite(r.curve).any()]
    speaking = max(scored, key=lambda i: results[i].confidence) if scored else None
    return results, speaking
