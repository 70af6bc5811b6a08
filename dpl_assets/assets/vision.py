"""Vision node: frames of each video as an HDF5 image stack (``images``); its asset is
generated from this declaration."""

from dpl_assets.assets.config import VideoToImagesConfig
from dpl_assets.nodes.frames import extract_frames
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


def decode_images(io: VideoIO, config: VideoToImagesConfig) -> dict[str, StagedFile]:
    """Upright RGB frames with timestamps, one HDF5 stack per video.

    Decoded by timestamp (variable frame rates and late starts come out right), rotation
    applied, optionally resampled to ``fps`` and downscaled to ``max_side``.
    """
    staging = io.stage("images")
    extract_frames(
        io.source("video"), staging,
        ext=config.ext, quality=config.quality, fps=config.fps, max_side=config.max_side,
    )  # fmt: skip
    return {"images": StagedFile(staging)}


VIDEO_TO_IMAGES_NODE = NodeSpec(
    name="VideoToImagesNode",
    inputs=("video",),
    outputs=("images",),
    config=VideoToImagesConfig,
    summary="upright frames with timestamps (HDF5 stack), optionally resampled and resized",
    compute=decode_images,
    group="vision",
)
