"""Audio decoding to the pipeline's canonical form: mono float32 at 16 kHz, on the clock.

ffmpeg does the work (decoding, downmix, resampling): measured here it gives exact sample
counts, where PyAV's resampler keeps AAC priming samples and moviepy is slow.

Two decisions live here:
- **Placement on the container clock** (see :mod:`dpl_assets.media.timeline`): ffmpeg's
  ``aresample`` filter with timestamp compensation puts every decoded block at its own
  timestamp, so a stream that starts after the container's start gets leading silence,
  and a gap in the timestamps (dropped packets) becomes silence of the gap's length.
  Sample k then sits at k / 16000 s, like the frames' timestamps.
- **A dialogue-preserving downmix**: the centre channel (where films put dialogue, and
  where a mono stream's one channel is) at full level, front left/right averaged, the
  surrounds at -9 dB each, the LFE left out. The same voice then has the same level as
  mono, stereo (both channels) or 5.1 centre; ffmpeg's default matrix puts 5.1 dialogue
  ~11 dB lower.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media.ffmpeg import file_url, run_ffmpeg_logged
from dpl_assets.media.probe import probe_media, timed_packets
from dpl_assets.outcomes import InputRejected

CENTRE_GAIN = 1.0
FRONT_GAIN = 0.5  # L and R averaged: a stereo voice keeps its mono level
SURROUND_GAIN = 0.354  # -9 dB: rear/side ambience does not drown the dialogue
DOWNMIX_GAINS = {
    "FC": CENTRE_GAIN,
    "FL": FRONT_GAIN,
    "FR": FRONT_GAIN,
    "LFE": 0.0,
    "LFE2": 0.0,
}

SURROUND_NAMES = frozenset(
    {
        "FLC", "FRC", "BL", "BR", "BC", "SL", "SR", "TC", "TFL", "TFC", "TFR", "TBL", "TBC",
        "TBR", "DL", "DR", "WL", "WR", "SDL", "SDR", "TSL", "TSR", "BFC", "BFL", "BFR",
    }
)  # fmt: skip
"""ffmpeg's other named channels: mixed at :data:`SURROUND_GAIN`."""

TIMESTAMP_SLACK_S = 0.005
"""Audio off its timestamps by more than this (seconds) is padded with silence or trimmed
(aresample's ``min_comp``/``min_hard_comp``); less is left as it is (millisecond-rounded
container timestamps, codec frame sizes that do not divide the rate)."""

FFMPEG_BLOCK_SAMPLES = 16384
"""Samples (~1 s at 16 kHz) per block ffmpeg passes from its filters to its encoder: only
how ffmpeg moves the samples between its threads; the output is the same for any value."""


def downmix_gains(channel_names: Sequence[str] | None, channels: int) -> list[float]:
    """Gain per input channel of the mono downmix (see the module docstring).

    ``channel_names`` are ffmpeg's names ("FL", "FC", ...) in stream order; without names
    or with unknown ones ("NONE": a layout that only counts channels) every channel gets
    ``1 / channels``, so a voice on all of them keeps its level.
    """
    if channels <= 0:
        raise ValueError(f"an audio stream needs at least one channel, not {channels}")
    if channels == 1:
        return [1.0]
    named = channel_names and len(channel_names) == channels
    if not named or not set(channel_names or ()) <= DOWNMIX_GAINS.keys() | SURROUND_NAMES:
        return [1.0 / channels] * channels
    return [DOWNMIX_GAINS.get(name, SURROUND_GAIN) for name in channel_names or ()]


def downmix_filter(gains: Sequence[float]) -> str:
    """An ffmpeg ``pan`` filter mixing channels ``c0..cN`` with ``gains`` into mono."""
    terms = "+".join(f"{gain:.6g}*c{index}" for index, gain in enumerate(gains) if gain)
    return f"pan=mono|c0={terms or '0*c0'}"


def decode_audio_mono_16k(
    path: Path | str,
    stream_index: int | None = None,
    channel_names: Sequence[str] | None = None,
    channels: int | None = None,
) -> np.ndarray:
    """:func:`decode_audio_logged` without the decoder's log."""
    return decode_audio_logged(path, stream_index, channel_names, channels)[0]


def decode_audio_logged(
    path: Path | str,
    stream_index: int | None = None,
    channel_names: Sequence[str] | None = None,
    channels: int | None = None,
) -> tuple[np.ndarray, str]:
    """Decode one audio stream of ``path`` to float32 (N,) in [-1, 1] at 16 kHz, placed on
    the container clock: sample k sits at ``k / 16000`` s from the container's start.

    ``stream_index`` is the absolute stream index; None takes the stream the probe chooses
    (:func:`dpl_assets.media.probe.choose_audio_stream`), and its layout. ``channel_names``
    and ``channels`` describe the stream's layout for the downmix (read from the file when
    not given). Returns the samples and the errors ffmpeg logged and went past (damaged
    packets, whose time becomes silence; "" when clean). Raises
    :class:`~dpl_assets.media.ffmpeg.FFmpegError` when ffmpeg fails.
    """
    if stream_index is None or channels is None:
        stream_index, channel_names, channels = _audio_layout(path, stream_index)
    gains = downmix_gains(channel_names, channels)
    resample = (
        f"aresample={AUDIO_SAMPLE_RATE_HZ}:async=1:min_hard_comp={TIMESTAMP_SLACK_S}:first_pts=0"
    )
    # ffmpeg 7+ passes every frame between threads (filter -> encoder -> muxer): ~1 s
    # blocks instead of the resampler's ~370-sample frames cut those hand-offs (ffmpeg's
    # CPU ~17 % less on an 8 s clip). p=0: the last block is not padded, samples unchanged.
    blocks = f"asetnsamples=n={FFMPEG_BLOCK_SAMPLES}:p=0"
    # Raw samples go to a temporary file, read back into the one array returned: an hour of
    # audio (230 MB) is held once, not also as ffmpeg's piped bytes and their copies.
    with tempfile.TemporaryDirectory(prefix="dpl_audio_") as scratch:
        raw = Path(scratch) / "samples.f32"
        _, log = run_ffmpeg_logged(
            [
                "-i", file_url(path),
                "-map", f"0:{stream_index}",
                "-af", f"{downmix_filter(gains)},{resample},{blocks}",
                "-ar", str(AUDIO_SAMPLE_RATE_HZ),
                "-c:a", "pcm_f32le",
                "-f", "f32le",
                "-y", file_url(raw),
            ],
            what=str(path),
        )  # fmt: skip
        # ffmpeg may leave no file when it had no sample to write.
        samples = np.fromfile(raw, "<f4") if raw.exists() else np.zeros(0, "<f4")
        samples = samples.astype(np.float32, copy=False)
    # A loud full mix can sum past full scale: clip as PCM16 storage would.
    np.clip(samples, -1.0, 1.0, out=samples)
    return samples, log


def audio_damage_spans(path: Path | str, stream_index: int) -> list[tuple[float, float]]:
    """(start_s, end_s) on the container clock of the audio packets of stream
    ``stream_index`` that do not decode (merged where they touch), by decoding each packet
    with PyAV. Run it only when ffmpeg logged errors: it decodes the stream once more."""
    spans: list[tuple[float, float]] = []
    for packet, start, end in timed_packets(path, stream_index):
        try:
            packet.decode()
        except av.FFmpegError:
            if spans and start <= spans[-1][1] + 1e-3:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
    return [(round(a, 4), round(b, 4)) for a, b in spans]


def _audio_layout(path: Path | str, stream_index: int | None) -> tuple[int, list[str] | None, int]:
    probe = probe_media(path, read_rotation=False)
    stream = probe.streams[stream_index] if stream_index is not None else probe.chosen("audio")
    if stream is None or stream.kind != "audio":
        raise InputRejected(f"{path}: no audio stream")
    return stream.index, stream.channel_names, stream.channels or 1
