"""The ``wav2vec`` asset: wav2vec 2.0 features of each video's 16 kHz audio."""

from typing import Any

import dagster as dg

from dpl_assets.assets.batch import VideoInputs, per_video_asset, run_videos
from dpl_assets.assets.config import Wav2vecConfig
from dpl_assets.resources import TorchDevice, Wav2vecModels
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage, LazyArtifacts


@per_video_asset(
    group_name="audio",
    pool="gpu",
)
def wav2vec(
    context: dg.AssetExecutionContext,
    config: Wav2vecConfig,
    storage: ArtifactStorage,
    torch_device: TorchDevice,
    wav2vec_models: Wav2vecModels,
    wav: LazyArtifacts,
) -> dict:
    """wav2vec 2.0 features float32 (T, D) at 50 Hz (``Wav2vecNode``).

    The model loads once per process; windows of all videos in the step share GPU batches.
    """
    device = torch_device.for_node(config.device)
    extractor = None

    def load_extractor():  # lazily: a step whose videos are all done loads no model
        nonlocal extractor
        if extractor is None:
            extractor = wav2vec_models.extractor(config.checkpoint, config.features, device)
            context.log.info(f"wav2vec: {config.checkpoint!r} ({config.features}) on {device}")
        return extractor

    windowing = {
        "chunk_seconds": config.chunk_seconds,
        "context_seconds": config.context_seconds,
        "batch_size": config.batch_size,
    }

    def compute_many(todo: dict[str, VideoInputs]) -> dict[str, Any]:
        audios = {video_id: inputs["wav"] for video_id, inputs in todo.items()}
        return load_extractor().extract_many(audios, **windowing)

    return run_videos(
        context,
        storage,
        recompute=config.recompute,
        inputs={"wav": wav},
        compute_one=lambda video_id, inputs: compute_many({video_id: inputs})[video_id],
        compute_many=compute_many,
        workers=config.num_workers,
    )


WAV2VEC_NODE = NodeSpec(
    name="Wav2vecNode",
    inputs=("wav",),
    outputs=("wav2vec",),
    also=("volume",),
    config=Wav2vecConfig,
    summary="wav2vec 2.0 features at 50 Hz (and the volume envelope, as the original)",
    needs_gpu=True,
    needs_weights=True,
    asset=wav2vec,
)
