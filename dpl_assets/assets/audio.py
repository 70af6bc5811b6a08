"""Audio assets: ``wav`` (16 kHz mono) and ``volume`` (its loudness envelope)."""

import dagster as dg
import numpy as np

from dpl_assets.assets.batch import per_video_asset, run_videos
from dpl_assets.assets.config import VolumeConfig, WavConfig
from dpl_assets.assets.sources import aac, video
from dpl_assets.nodes.audio import (
    check_feature_window,
    extract_wav_with_damage,
    volume_envelope,
)
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage, LazyArtifacts
from dpl_assets.storage.video_io import VideoIO


@per_video_asset(
    deps=[video, aac],
    group_name="audio",
)
def wav(context: dg.AssetExecutionContext, config: WavConfig, storage: ArtifactStorage) -> dict:
    """Mono 16 kHz PCM16 audio of each video (``VideoToWavNode``) or aac file (``AacToWavNode``).

    The stream ffmpeg would choose (``default``-flagged, else the first), placed on the
    container clock (sample k at k / 16000 s: silence before a late start and in timestamp
    gaps), downmixed keeping dialogue level. Rejects files without an audio stream, with
    empty, truncated or shorter-than-25-ms audio, and unreadable files. Damaged packets
    become silence, and where is recorded (shown in the report).
    """

    def extract(_: str, io: VideoIO) -> np.ndarray:
        samples, damage = extract_wav_with_damage(io.source(config.source))
        # Kept like ffmpeg keeps it; where it did not decode is recorded for the report.
        io.record_damage("wav", damage.spans, damage.summary)
        return samples

    return run_videos(
        context,
        storage,
        recompute=config.recompute,
        inputs={},
        compute_one=extract,
        workers=config.num_jobs,
    )


@per_video_asset(
    group_name="audio",
)
def volume(
    context: dg.AssetExecutionContext,
    config: VolumeConfig,
    storage: ArtifactStorage,
    wav: LazyArtifacts,
) -> dict:
    """Loudness envelope float32 (T,): mean |x| per 320-sample hop, aligned with wav2vec frames.

    Needs no model weights (``VolumeNode``; ``Wav2vecNode`` also produces it).
    """

    def envelope(video_id: str, io: VideoIO) -> np.ndarray:
        check_feature_window(io["wav"].size, io.file_of("wav") or video_id)
        return volume_envelope(io["wav"])

    return run_videos(
        context, storage, recompute=config.recompute, inputs={"wav": wav}, compute_one=envelope
    )


VIDEO_TO_WAV_NODE = NodeSpec(
    name="VideoToWavNode",
    inputs=("video",),
    outputs=("wav",),
    config=WavConfig,
    fixed={"source": "video"},
    summary="16 kHz mono audio on the container clock",
    asset=wav,
)
AAC_TO_WAV_NODE = NodeSpec(
    name="AacToWavNode",
    inputs=("aac",),
    outputs=("wav",),
    config=WavConfig,
    fixed={"source": "aac"},
    summary="16 kHz mono audio of the aac file",
    asset=wav,
)
VOLUME_NODE = NodeSpec(
    name="VolumeNode",
    inputs=("wav",),
    outputs=("volume",),
    config=VolumeConfig,
    summary="loudness envelope at the wav2vec step rate",
    asset=volume,
)
