"""``Wav2vecNode``: wav2vec 2.0 features of each video's 16 kHz audio; its asset is generated
from this declaration (the model once per process, the step's videos in shared batches)."""

from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import numpy as np

from dpl_assets.assets.config import Wav2vecConfig
from dpl_assets.nodes.wav2vec import Wav2vecExtractor
from dpl_assets.resources import cached_wav2vec
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


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
    group="audio",
)
