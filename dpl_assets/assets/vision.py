"""Vision node: frames of each video as an HDF5 image stack (``images``); its asset is
generated from this declaration."""

from typing import Literal

from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media.frames import DecodeRecipe
from dpl_assets.nodes.frames import extract_frames
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class VideoToImagesConfig(NodeConfig):
    """``VideoToImagesNode``."""

    ext: Literal[".jpg", ".png"] = Field(
        default=".jpg", description="Image format inside the stack: JPEG or lossless PNG."
    )
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    fps: float | None = Field(
        default=None, gt=0, description="Resample to this constant rate (e.g. 25); None keeps all."
    )
    max_side: int = Field(
        default=0, ge=0, description="Downscale so the longer side is at most this; 0 = native."
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos decoded in parallel.")


def decode_images(io: VideoIO, config: VideoToImagesConfig) -> dict[str, StagedFile]:
    """Upright RGB frames with timestamps, one HDF5 stack per video.

    Decoded by timestamp (variable frame rates and late starts come out right), rotation
    applied, optionally resampled to ``fps`` and downscaled to ``max_side``.
    """
    staging, video = io.stage("images"), io.source("video")
    with io.keep_decoded(video, DecodeRecipe(fps=config.fps, max_side=config.max_side)) as keep:
        extract_frames(
            video, staging, ext=config.ext, quality=config.quality, fps=config.fps,
            max_side=config.max_side, keep=keep,
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
