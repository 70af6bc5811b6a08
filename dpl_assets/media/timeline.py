"""The one clock: where on the container's timeline audio sample k and video frame i sit.

Every artefact of a video shares one clock, the **container clock**: seconds from the
container's start time (the earliest start of its streams, as ffmpeg's ``start_time``).

- Video frame i sits at its presentation timestamp on that clock (``images`` stores them as
  ``timestamps``; a stream that starts late has a first frame after 0).
- Audio sample k of a ``wav`` sits at ``k / 16000`` s on that clock: extraction places the
  decoded audio by its packet timestamps, with silence before a late start and in
  timestamp gaps, so the wav never starts at "the first decoded sample".
- The wav ends where the audio ends; frames after that end have no audio
  (:func:`frames_with_audio`), and consumers give them silence, never the last audio held.

Consumers (wav extraction, frame decoding, packing, A2EN, previews, the reader) use these
functions instead of computing times themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ


def audio_end_s(num_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> float:
    """Container-clock time (s) where a wav of ``num_samples`` samples ends."""
    return num_samples / float(sample_rate_hz)


def frames_with_audio(
    frame_times: np.ndarray, num_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ
) -> np.ndarray:
    """bool (N,): which frames at ``frame_times`` (N,) seconds lie before the audio's end."""
    return np.asarray(frame_times, np.float64) < audio_end_s(num_samples, sample_rate_hz)


def frames_in_spans(frame_times: np.ndarray, spans: Sequence[Sequence[float]]) -> np.ndarray:
    """bool (N,): which frames at ``frame_times`` (N,) seconds lie in any of ``spans``
    ((start_s, end_s) on the clock, start included, end excluded)."""
    times = np.asarray(frame_times, np.float64)
    inside = np.zeros(times.shape, dtype=bool)
    for start, end in spans:
        inside |= (times >= start) & (times < end)
    return inside


NOMINAL_FPS = 25.0
"""The frame rate assumed where nothing states one: renders of parameters brought without
a video (their times are labels only: nothing aligns them with audio), and the playback
rate of a one-frame clip (no frame interval to take a rate from)."""


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the runs of True in a bool (N,) ``mask``: two int64
    arrays of equal length, in order (frames, audio steps: whatever ``mask`` indexes)."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return edges[0::2].astype(np.int64), edges[1::2].astype(np.int64)


def constant_rate_times(count: int, fps: float) -> np.ndarray:
    """float64 (count,) seconds ``i / fps``: frame times for data given at a nominal rate."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, not {fps}")
    return np.arange(count, dtype=np.float64) / float(fps)


def frame_times_for(
    timestamps: np.ndarray | None,
    count: int,
    fps: float | None = None,
    *,
    assume_fps: float | None = None,
) -> np.ndarray:
    """The one frame-time rule: float64 (count,) seconds on the container clock of
    ``count`` frames of data.

    - ``fps`` given (a node's ``fps`` parameter, for data at a nominal rate): ``i / fps``;
    - else the frames' own ``timestamps`` (the decoded presentation times of ``images``
      or of a stack made from them), which must be ``count`` long;
    - else ``i / assume_fps`` when the caller gives one (only where the times are labels
      and never meet audio, e.g. renders of parameters brought without a video);
    - else ValueError: no frame times (compute ``images`` or give ``fps``).

    A timestamp count that disagrees with ``count`` is a ValueError too, never guessed.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, not {count}")
    if fps:
        return constant_rate_times(count, fps)
    if timestamps is not None:
        times = np.asarray(timestamps, np.float64).reshape(-1)
        if times.size != count:
            raise ValueError(
                f"{count} frames but {times.size} frame timestamps: give the fps parameter"
            )
        return times.copy()
    if assume_fps:
        return constant_rate_times(count, assume_fps)
    raise ValueError(f"no frame times for {count} frames: compute images or give fps")


def feature_step_times(
    count: int, hop_samples: int, window_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ
) -> np.ndarray:
    """Container-clock time (s) of ``count`` audio feature steps, step t summarizing wav
    samples ``[t * hop, t * hop + window)``: the centre of that span, float64 (count,)."""
    if count < 0 or hop_samples <= 0 or window_samples <= 0 or sample_rate_hz <= 0:
        raise ValueError("count must be >= 0; hop, window and sample rate must be > 0")
    steps = np.arange(count, dtype=np.float64)
    return (steps * hop_samples + window_samples / 2.0) / float(sample_rate_hz)


def feature_end_samples(steps: int, hop_samples: int, window_samples: int) -> int:
    """Samples of audio that ``steps`` feature steps (step t covers samples
    ``[t * hop, t * hop + window)``) account for: 0 for no steps."""
    return 0 if steps <= 0 else (steps - 1) * hop_samples + window_samples


def silence_after_audio(values: np.ndarray, with_audio: np.ndarray) -> np.ndarray:
    """``values`` (N, ...) on frames with the frames where ``with_audio`` (N,) is False set
    to 0 (silence: volume 0, zero features); a float32 copy."""
    out = np.array(values, dtype=np.float32, copy=True)
    keep = np.asarray(with_audio, bool)
    if keep.shape != (out.shape[0],):
        raise ValueError(f"with_audio {keep.shape} does not match values {out.shape}")
    out[~keep] = 0.0
    return out
