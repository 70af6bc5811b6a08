"""Vision assets: frames of each video as an HDF5 image stack."""

import dagster as dg

from dpl_assets.assets.batch import per_video_asset, run_videos
from dpl_assets.assets.config import VideoToImagesConfig
from dpl_assets.assets.sources import video
from dpl_assets.nodes.frames import extract_frames
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.video_io import VideoIO


@per_video_asset(deps=[video], group_name="vision")
def images(
    context: dg.AssetExecutionContext, config: VideoToImagesConfig, storage: ArtifactStorage
) -> dict:
    """Upright RGB frames with timestamps (``VideoToImagesNode``), one HDF5 stack per video.

    Decoded by timestamp (variable frame rates and late starts come out right), rotation
    applied, optionally resampled to ``fps`` and downscaled to ``max_side``.
    """

    def decode(_: str, io: VideoIO) -> StagedFile:
        staging = io.stage("images")
        extract_frames(
            io.source("video"), staging,
            ext=config.ext, quality=config.quality, fps=config.fps, max_side=config.max_side,
        )  # fmt: skip
        return StagedFile(staging)

    return run_videos(
        context, storage, recompute=config.recompute, inputs={}, compute_one=decode,
        workers=config.num_jobs,
    )  # fmt: skip


VIDEO_TO_IMAGES_NODE = NodeSpec(
    name="VideoToImagesNode",
    inputs=("video",),
    outputs=("images",),
    config=VideoToImagesConfig,
    summary="upright frames with timestamps (HDF5 stack), optionally resampled and resized",
    asset=images,
)
