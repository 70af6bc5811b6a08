"""Audio nodes: ``wav`` (16 kHz mono on the container clock) and ``volume`` (its loudness
envelope); their assets are generated from these declarations."""

from dataclasses import replace
from typing import Literal

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.audio import check_feature_window, extract_wav_with_damage, volume_envelope
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class WavConfig(NodeConfig):
    """``VideoToWavNode`` (source=video) and ``AacToWavNode`` (source=aac)."""

    source: Literal["video", "aac"] = Field(
        default="video", description="Which registered source file the audio is taken from."
    )
    num_jobs: int = Field(default=4, ge=1, description="ffmpeg processes run in parallel.")


class VolumeConfig(NodeConfig):
    pass


def extract_wav(io: VideoIO, config: WavConfig) -> dict[str, np.ndarray]:
    """Mono 16 kHz float32 (N,) audio of the video (``source=video``) or its aac file.

    The stream ffmpeg would choose (``default``-flagged, else the first), placed on the
    container clock (sample k at k / 16000 s: silence before a late start and in timestamp
    gaps), downmixed keeping dialogue level. Rejects files without an audio stream, with
    empty, truncated or shorter-than-25-ms audio, and unreadable files. Damaged packets
    become silence, and where is recorded (shown in the report).
    """
    samples, damage = extract_wav_with_damage(io.source(config.source))
    # Kept like ffmpeg keeps it; where it did not decode is recorded for the report.
    io.record_damage("wav", damage.spans, damage.summary)
    return {"wav": samples}


def volume_of(io: VideoIO, config: VolumeConfig) -> dict[str, np.ndarray]:
    """Loudness envelope float32 (T,): mean |x| per 320-sample hop, aligned with wav2vec
    frames. Rejects a wav shorter than one 25 ms window, naming its file."""
    check_feature_window(io["wav"].size, io.file_of("wav") or io.video_id)
    return {"volume": volume_envelope(io["wav"])}


VIDEO_TO_WAV_NODE = NodeSpec(
    name="VideoToWavNode",
    inputs=("video",),
    outputs=("wav",),
    config=WavConfig,
    fixed={"source": "video"},
    summary="16 kHz mono audio on the container clock",
    compute=extract_wav,
    group="audio",
)
AAC_TO_WAV_NODE = replace(
    VIDEO_TO_WAV_NODE,
    name="AacToWavNode",
    inputs=("aac",),
    fixed={"source": "aac"},
    summary="16 kHz mono audio of the aac file",
)
VOLUME_NODE = NodeSpec(
    name="VolumeNode",
    inputs=("wav",),
    outputs=("volume",),
    config=VolumeConfig,
    summary="loudness envelope at the wav2vec step rate",
    compute=volume_of,
    group="audio",
)
