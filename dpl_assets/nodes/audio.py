"""Audio family: source media -> 16 kHz mono wav, and the loudness envelope.

Outputs: ``wav`` float32 (N,) in [-1, 1] at 16 kHz; ``volume`` float32 (T,), T the number
of wav2vec frames the same audio yields (50 Hz: a 320-sample hop, a 400-sample window).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media.audio import decode_audio_mono_16k
from dpl_assets.media.ffmpeg import FFmpegError
from dpl_assets.media.probe import probe_media
from dpl_assets.outcomes import InputRejected

# wav2vec2-base's convolutional feature encoder (transformers' Wav2Vec2Config defaults).
WAV2VEC2_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
VOLUME_HOP_SAMPLES = 320  # product of the strides: one wav2vec frame per 20 ms at 16 kHz

TRUNCATION_TOLERANCE_S = 0.25
"""How much shorter than its header the decoded audio may be before the file counts as
truncated (codecs legitimately drop priming/padding samples: a few tens of ms)."""


def extract_wav(source: Path) -> np.ndarray:
    """Decode the first audio stream of ``source`` to float32 (N,) mono at 16 kHz.

    Rejects (:class:`InputRejected`) a file that is empty, cannot be opened, has no audio
    stream, decodes to no samples, or decodes to clearly less audio than its header states.
    """
    probe = probe_media(source, read_rotation=False)  # no video decode for audio
    audio = probe.first("audio")
    if audio is None:
        raise InputRejected(f"{source}: no audio stream")
    try:
        samples = decode_audio_mono_16k(source, stream_index=audio.index)
    except FFmpegError as error:
        raise InputRejected(f"{source}: audio does not decode: {error}") from error
    decoded_s = samples.size / AUDIO_SAMPLE_RATE_HZ
    if samples.size == 0:
        raise InputRejected(f"{source}: the audio stream decodes to no samples")
    header_s = audio.duration_s if audio.duration_s is not None else probe.duration_s
    if header_s is not None and decoded_s < header_s - TRUNCATION_TOLERANCE_S:
        raise InputRejected(
            f"{source}: truncated: the header promises {header_s:.2f} s of audio, "
            f"only {decoded_s:.2f} s decodes"
        )
    return samples


def conv_output_length(
    num_samples: int,
    kernels: Sequence[int] = WAV2VEC2_CONV_KERNEL,
    strides: Sequence[int] = WAV2VEC2_CONV_STRIDE,
) -> int:
    """Frames a stack of unpadded 1-D convolutions yields for ``num_samples`` inputs."""
    length = num_samples
    for kernel, stride in zip(kernels, strides, strict=True):
        length = (length - kernel) // stride + 1 if length >= kernel else 0
    return length


def volume_envelope(wav: np.ndarray, num_frames: int | None = None) -> np.ndarray:
    """Mean absolute amplitude per 320-sample hop: float32 (T,).

    ``num_frames`` defaults to the wav2vec2 frame count of ``wav``, so the envelope lines
    up frame for frame with the features; hops past the end of the audio count as silence.
    """
    if num_frames is None:
        num_frames = conv_output_length(wav.size)
    padded = np.zeros(num_frames * VOLUME_HOP_SAMPLES, dtype=np.float32)
    used = min(wav.size, padded.size)
    padded[:used] = np.abs(wav[:used])
    return padded.reshape(num_frames, VOLUME_HOP_SAMPLES).mean(axis=1).astype(np.float32)
