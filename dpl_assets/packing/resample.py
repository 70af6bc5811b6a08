"""Audio features onto video frames: step timestamps, linear resampling, smoothing.

wav2vec features and the volume envelope come at 50 steps per second (a 320-sample hop at
16 kHz); video frames come at their own presentation timestamps. As in the original tool,
features are resampled onto the frames by linear interpolation, on timestamps (so
variable-rate video and clips whose video starts late come out right), and optionally
smoothed with an edge-padded moving average (``window_size=16`` in its Vid2vidAudioNode).
"""

from __future__ import annotations

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media import timeline

WAV2VEC_HOP_SAMPLES = 320
"""Samples between wav2vec2 steps (product of the conv strides 5*2^6)."""
WAV2VEC_WINDOW_SAMPLES = 400
"""Receptive field of wav2vec2's conv feature encoder, in samples."""


def feature_times(
    count: int,
    hop_samples: int = WAV2VEC_HOP_SAMPLES,
    window_samples: int = WAV2VEC_WINDOW_SAMPLES,
    sample_rate: int = AUDIO_SAMPLE_RATE_HZ,
) -> np.ndarray:
    """Time in seconds of the centre of each of ``count`` feature steps: float64 (count,).

    Step ``t`` summarizes samples ``[t * hop, t * hop + window)``, so its time is the centre
    of that span, ``(t * hop + window / 2) / sample_rate``: 0.0125 s + 0.02 s * t for
    wav2vec2 (hop 320, window 400 at 16 kHz). The centre, not the start, because a feature
    describes the audio around it; taking the start would shift audio 12.5 ms early against
    the video. The volume envelope (mean |x| over ``[t * 320, t * 320 + 320)``, see
    ``dpl_assets.nodes.audio.volume_envelope``) is centred with ``window_samples=320``.
    """
    return timeline.feature_step_times(count, hop_samples, window_samples, sample_rate)


def resample_to_frames(
    features: np.ndarray, feature_times: np.ndarray, frame_times: np.ndarray
) -> np.ndarray:
    """Linear interpolation of ``features`` (T, ...) at ``frame_times`` (N,) -> (N, ...) float32.

    ``feature_times`` (T,) and ``frame_times`` (N,) are seconds on the same clock and
    ``feature_times`` must be strictly increasing. Frames before the first step or after
    the last one hold that edge step's value (no extrapolation): right for the few
    milliseconds between the last step's centre and the audio's end, wrong past the end.
    Callers on the audio clock therefore silence the frames after the audio's end
    (:func:`dpl_assets.packing.video_pack.resample_audio_feature` does, with
    :func:`dpl_assets.media.timeline.frames_with_audio`). Every trailing axis is
    interpolated independently (the same weights for all of them).
    """
    values = np.asarray(features)
    source = np.asarray(feature_times, dtype=np.float64)
    target = np.asarray(frame_times, dtype=np.float64)
    if values.ndim < 1 or source.ndim != 1 or values.shape[0] != source.shape[0]:
        raise ValueError(
            f"features {values.shape} and feature_times {source.shape} must share the first axis"
        )
    if target.ndim != 1:
        raise ValueError(f"frame_times must be (N,), got {target.shape}")
    if source.size == 0:
        raise ValueError("no feature steps to resample")
    if source.size > 1 and not np.all(np.diff(source) > 0):
        raise ValueError("feature_times must be strictly increasing")
    if source.size == 1:
        return np.repeat(values[:1], target.size, axis=0).astype(np.float32)
    # Left neighbour of each frame, clamped so both neighbours exist; the weight clipped to
    # [0, 1] holds the edge values outside the feature range.
    left = np.clip(np.searchsorted(source, target, side="right") - 1, 0, source.size - 2)
    weight = np.clip((target - source[left]) / (source[left + 1] - source[left]), 0.0, 1.0)
    weight = weight.reshape((-1,) + (1,) * (values.ndim - 1))
    lower = values[left].astype(np.float64)
    upper = values[left + 1].astype(np.float64)
    # Where a weight is exactly 0 or 1 take that neighbour as is (no NaN leaks from the other).
    blended = lower + weight * (upper - lower)
    mixed = np.where(weight == 0.0, lower, np.where(weight == 1.0, upper, blended))
    return mixed.astype(np.float32)


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Edge-padded moving average along the first axis: (N, ...) -> (N, ...) float32.

    Output ``i`` is the mean of ``x[i - window // 2 : i - window // 2 + window]`` with
    indices clamped to ``[0, N - 1]`` (edge padding, so the ends are not pulled towards 0).
    For odd ``window`` that is centred on ``i``; for even ``window`` it reaches one step
    further into the past than into the future (``i - w/2 .. i + w/2 - 1``), which is
    SciPy's ``uniform_filter1d`` convention (``origin=0``, ``mode="nearest"``).
    ``window <= 1`` returns ``x`` unchanged (as float32). Accumulates in float64.
    """
    values = np.asarray(x)
    if values.ndim < 1:
        raise ValueError("moving_average needs at least one axis")
    if window <= 1 or values.shape[0] == 0:
        return values.astype(np.float32)
    from scipy.ndimage import uniform_filter1d  # on use: 0.3 s of every process's start-up

    smoothed = uniform_filter1d(values.astype(np.float64), size=int(window), axis=0, mode="nearest")
    return smoothed.astype(np.float32)
