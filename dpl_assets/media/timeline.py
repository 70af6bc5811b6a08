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

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ


def audio_sample_times(count: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> np.ndarray:
    """Container-clock time in seconds of each of ``count`` wav samples: float64 (count,)."""
    return np.arange(count, dtype=np.float64) / float(sample_rate_hz)


def audio_end_s(num_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> float:
    """Container-clock time (s) where a wav of ``num_samples`` samples ends."""
    return num_samples / float(sample_rate_hz)


def frames_with_audio(
    frame_times: np.ndarray, num_samples: int, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ
) -> np.ndarray:
    """bool (N,): which frames at ``frame_times`` (N,) seconds lie before the audio's end."""
    return np.asarray(frame_times, np.float64) < audio_end_s(num_samples, sample_rate_hz)


def constant_rate_times(count: int, fps: float) -> np.ndarray:
    """float64 (count,) seconds ``i / fps``: frame times for data given at a nominal rate."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, not {fps}")
    return np.arange(count, dtype=np.float64) / float(fps)
