"""Audio family: source media -> 16 kHz mono wav, and the loudness envelope.

Outputs: ``wav`` float32 (N,) in [-1, 1] at 16 kHz; ``volume`` float32 (T,), T the number
of wav2vec frames the same audio yields (50 Hz: a 320-sample hop, a 400-sample window).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media.audio import audio_damage_spans, decode_audio_logged
from dpl_assets.media.ffmpeg import FFmpegError
from dpl_assets.media.probe import MediaProbe, StreamInfo, probe_media, stream_end_s
from dpl_assets.media.timeline import audio_end_s
from dpl_assets.outcomes import InputRejected

# wav2vec2-base's convolutional feature encoder (transformers' Wav2Vec2Config defaults).
WAV2VEC2_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
VOLUME_HOP_SAMPLES = 320  # product of the strides: one wav2vec frame per 20 ms at 16 kHz
VOLUME_BLOCK_HOPS = 8192  # hops of the envelope computed at a time (10 MB of samples)

TRUNCATION_TOLERANCE_S = 0.25
"""How much earlier than its header's end the decoded audio may end before the file counts
as truncated (codecs legitimately drop priming/padding samples: a few tens of ms)."""

FEATURE_WINDOW_SAMPLES = 400
"""The shortest audio any audio feature is defined on: one 25 ms wav2vec2/volume window."""


@dataclass
class AudioDamage:
    """Where a source's audio did not decode (its time is silence in the wav):
    ``spans`` (start_s, end_s) on the container clock, ``summary`` one line ("" if clean)."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    summary: str = ""


def extract_wav(source: Path) -> np.ndarray:
    """:func:`extract_wav_with_damage` without the damage record."""
    return extract_wav_with_damage(source)[0]


def extract_wav_with_damage(source: Path) -> tuple[np.ndarray, AudioDamage]:
    """Decode the chosen audio stream of ``source`` to float32 (N,) mono at 16 kHz, placed
    on the container clock (sample k at k / 16000 s; see :mod:`dpl_assets.media.timeline`),
    and say where its data was damaged (packets that do not decode become silence, as
    ffmpeg keeps what decodes).

    Rejects (:class:`InputRejected`, naming the file) a file that is empty, cannot be
    opened, has no audio stream, decodes to no samples or to less than one 25 ms feature
    window, or is truncated (see :func:`check_not_truncated`).
    """
    probe = probe_media(source, read_rotation=False)  # no video decode for audio
    audio = probe.chosen("audio")
    if audio is None:
        raise InputRejected(f"{source}: no audio stream")
    try:
        samples, log = decode_audio_logged(
            source, audio.index, audio.channel_names, audio.channels or 1
        )
    except FFmpegError as error:
        raise InputRejected(f"{source}: audio does not decode: {error}") from error
    if samples.size == 0:
        raise InputRejected(f"{source}: the audio stream decodes to no samples")
    lead = round(max(audio.start_time_s or 0.0, 0.0) * AUDIO_SAMPLE_RATE_HZ)
    check_feature_window(samples.size - min(lead, samples.size), source)
    check_not_truncated(source, probe, audio, audio_end_s(samples.size))
    damage = AudioDamage()
    if log:
        damage.spans = audio_damage_spans(source, audio.index)
        where = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in damage.spans) or "not located"
        first = log.splitlines()[0][:200]
        damage.summary = f"damaged audio data: silence where it did not decode: {where} ({first})"
    return samples, damage


def check_feature_window(num_samples: int, what: Path | str) -> None:
    """Reject audio of fewer than :data:`FEATURE_WINDOW_SAMPLES` samples (at 16 kHz):
    no audio feature (volume, wav2vec) has a single step on it. ``what`` names the file."""
    if num_samples < FEATURE_WINDOW_SAMPLES:
        raise InputRejected(
            f"{what}: audio of {num_samples / AUDIO_SAMPLE_RATE_HZ * 1000:.0f} ms is shorter "
            f"than one {FEATURE_WINDOW_SAMPLES / AUDIO_SAMPLE_RATE_HZ * 1000:.0f} ms "
            "feature frame"
        )


def check_not_truncated(
    source: Path, probe: MediaProbe, audio: StreamInfo, decoded_end_s: float
) -> None:
    """Reject a file whose audio ends clearly before its header says.

    With a per-stream duration (MP4, MOV) the audio's own header end is the reference.
    Matroska/WebM (and others) state only the container's duration: audio ending early is
    then a truncated file only when the video ends early too; a complete file whose audio
    is simply shorter than its video is processed (frames past the audio's end get silence).
    """
    start = audio.start_time_s or 0.0
    if audio.duration_s is not None:
        header_end = start + audio.duration_s
    elif probe.duration_s is not None:
        header_end = probe.duration_s
        if decoded_end_s < header_end - TRUNCATION_TOLERANCE_S and probe.video_stream is not None:
            video_end = stream_end_s(source, probe.video_stream)
            if video_end is not None and video_end >= header_end - TRUNCATION_TOLERANCE_S:
                return  # the video runs to the end: the audio is short, not cut off
    else:
        return
    if decoded_end_s < header_end - TRUNCATION_TOLERANCE_S:
        raise InputRejected(
            f"{source}: truncated: the header promises audio until {header_end:.2f} s, "
            f"it decodes until {decoded_end_s:.2f} s"
        )


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
    envelope = np.empty(num_frames, dtype=np.float32)
    # Hops in blocks: memory stays at one block whatever the audio's length.
    for first in range(0, num_frames, VOLUME_BLOCK_HOPS):
        hops = min(VOLUME_BLOCK_HOPS, num_frames - first)
        start = first * VOLUME_HOP_SAMPLES
        block = np.zeros(hops * VOLUME_HOP_SAMPLES, dtype=np.float32)
        used = max(0, min(wav.size - start, block.size))
        np.abs(wav[start : start + used], out=block[:used])
        envelope[first : first + hops] = block.reshape(hops, VOLUME_HOP_SAMPLES).mean(axis=1)
    return envelope
