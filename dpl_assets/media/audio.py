"""Audio decoding to the pipeline's canonical form: mono float32 at 16 kHz.

ffmpeg does the work (decoding, all-channel downmix, resampling): measured here it gives
exact sample counts, where PyAV's resampler keeps AAC priming samples and moviepy is slow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media.ffmpeg import file_url, run_ffmpeg


def decode_audio_mono_16k(path: Path | str, stream_index: int | None = None) -> np.ndarray:
    """Decode one audio stream of ``path`` to float32 (N,) in [-1, 1] at 16 kHz.

    All channels are mixed down (``-ac 1``), so a voice present in one channel only is kept.
    ``stream_index`` is the absolute stream index; None takes the first audio stream.
    """
    stream = f"0:{stream_index}" if stream_index is not None else "0:a:0"
    pcm = run_ffmpeg(
        [
            "-i", file_url(path),
            "-map", stream,
            "-ac", "1",
            "-ar", str(AUDIO_SAMPLE_RATE_HZ),
            "-c:a", "pcm_s16le",
            "-f", "s16le",
            "pipe:1",
        ],
        what=str(path),
    )  # fmt: skip
    return (np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)
