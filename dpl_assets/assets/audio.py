"""Audio assets: ``wav`` (16 kHz mono) and ``volume`` (its loudness envelope)."""

from pathlib import Path

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
from dpl_assets.outcomes import InputRejected
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage, LazyArtifacts


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
    become silence, and where is recorded (``store.damage("wav", id)``, shown in the report).
    """
    store = storage.store()

    def extract(video_id: str, _: dict) -> np.ndarray:
        source = store.catalog.entry(video_id).sources.get(config.source)
        if source is None:
            raise InputRejected(
                f"{video_id}: no {config.source!r} file found for this video "
                f"(give an {config.source!r} root in the inputs with the same relative path)"
            )
        samples, damage = extract_wav_with_damage(Path(source))
        # Kept like ffmpeg keeps it; where it did not decode is recorded for the report.
        store.record_damage("wav", video_id, [list(span) for span in damage.spans], damage.summary)
        return samples

    return run_videos(
        context,
        store,
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
    store = storage.store()

    def envelope(video_id: str, inputs: dict) -> np.ndarray:
        check_feature_window(inputs["wav"].size, store.existing_file("wav", video_id) or video_id)
        return volume_envelope(inputs["wav"])

    return run_videos(
        context, store, recompute=config.recompute, inputs={"wav": wav}, compute_one=envelope
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
