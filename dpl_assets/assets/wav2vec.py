"""``Wav2vecNode``: wav2vec 2.0 features of each video's 16 kHz audio; its asset is generated
from this declaration (the model once per process, the step's videos in shared batches)."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.wav2vec import DEFAULT_CHECKPOINT, Wav2vecExtractor
from dpl_assets.resources import cached_wav2vec
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class Wav2vecConfig(NodeConfig):
    """``Wav2vecNode``."""

    checkpoint: str = Field(
        default=DEFAULT_CHECKPOINT,
        description="Model hub id or local folder holding config.json + weights.",
    )
    features: str = Field(
        default="quantized",
        description="'quantized' (projected quantized states, (T, 256) for base) "
        "or 'hidden:K' (transformer hidden state K; -1 = last).",
    )
    device: str = Field(default="auto", description="'auto', 'cpu' or 'cuda:N'.")
    batch_size: int = Field(default=8, ge=1, description="Audio windows per forward pass.")
    num_workers: int = Field(default=4, ge=1, description="Threads reading audio files.")
    chunk_seconds: float = Field(default=10.0, gt=0, description="Window length for long audio.")
    context_seconds: float = Field(
        default=1.0, ge=0, description="Context each window adds on both sides (discarded)."
    )


def wav2vec_model(config: Wav2vecConfig, device: Callable[[], str]) -> Wav2vecExtractor:
    """The configured checkpoint's extractor on the node's device, loaded once per process
    (made when a step first has a video to compute: a step with all done loads none)."""
    extractor = cached_wav2vec(config.checkpoint, config.features, device())
    dg.get_dagster_logger().info(
        f"wav2vec: {config.checkpoint!r} ({config.features}) on {extractor.device}"
    )
    return extractor


def wav2vec_many(
    todo: Mapping[str, VideoIO], config: Wav2vecConfig
) -> dict[str, dict[str, np.ndarray]]:
    """wav2vec 2.0 features float32 (T, D) at 50 Hz of several videos: windows of all of
    them share the model's batches (``chunk_seconds`` with ``context_seconds`` each side)."""
    if not todo:
        return {}
    extractor = next(iter(todo.values())).model
    audios = {video_id: io["wav"] for video_id, io in todo.items()}
    features = extractor.extract_many(
        audios, chunk_seconds=config.chunk_seconds, context_seconds=config.context_seconds,
        batch_size=config.batch_size,
    )  # fmt: skip
    return {video_id: {"wav2vec": value} for video_id, value in features.items()}


def wav2vec_one(io: VideoIO, config: Wav2vecConfig) -> dict[str, Any]:
    """wav2vec 2.0 features of one video (:func:`wav2vec_many` of one)."""
    return wav2vec_many({io.video_id: io}, config)[io.video_id]


WAV2VEC_NODE = NodeSpec(
    name="Wav2vecNode",
    inputs=("wav",),
    outputs=("wav2vec",),
    also=("volume",),
    config=Wav2vecConfig,
    summary="wav2vec 2.0 features at 50 Hz (and the volume envelope, as the original)",
    needs_gpu=True,
    needs_weights=True,
    compute=wav2vec_one,
    compute_many=wav2vec_many,
    model=wav2vec_model,
    preload=("torch", "dpl_assets.nodes.wav2vec_native"),  # torch: ~1 s of CPU to import
    group="audio",
)
