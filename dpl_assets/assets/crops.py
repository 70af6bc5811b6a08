"""Crop nodes: square boxes per frame, then face crops as an HDF5 image stack; their assets
are generated from these declarations."""

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.bboxes import emoca_like_bboxes, fixed_bboxes, transform_raw_bboxes
from dpl_assets.nodes.crops import crop_frames
from dpl_assets.nodes.frames import IMAGE_FORMAT_BY_EXT
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.storage.video_io import VideoIO


class BboxesConfig(NodeConfig):
    """``TransformRawBboxesNode``, ``FixedBboxesNode``, ``EmocaLikeBboxesNode``."""

    method: Literal["transform_raw", "fixed", "emoca_like"] = "fixed"
    extend_factor: float = Field(default=0.1, description="transform_raw: padding factor.")
    scale: float = Field(default=1.25, gt=0, description="fixed / emoca_like: box scale.")
    window_size: int = Field(default=5, ge=1, description="emoca_like: sliding window (frames).")
    use_smoothing: bool = Field(default=True, description="emoca_like: Savitzky-Golay smoothing.")
    equal_size: bool = Field(default=True, description="emoca_like: one size for the clip.")
    size_quantile: float = Field(default=0.75, ge=0, le=1, description="emoca_like: that size.")


class CropConfig(NodeConfig):
    """``CropNode``."""

    size_hw: list[int] = Field(
        default=[256, 256], min_length=1, max_length=2,
        description="Crop (height, width) in pixels; one number for a square.",
    )  # fmt: skip
    output_ext: Literal[".jpg", ".png"] = Field(default=".jpg", description="Crop image format.")
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    pad_mode: Literal["constant", "edge"] = Field(
        default="constant", description="Fill where a box runs past the frame edge."
    )
    resample: Literal["lanczos", "area"] = Field(
        default="lanczos",
        description="'lanczos' (the original's; pixel area when shrinking over 2x) or "
        "'area' (pixel area always: about 2.5x cheaper).",
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos cropped in parallel.")


def compute_bboxes(inputs: Mapping[str, Any], config: BboxesConfig) -> dict[str, np.ndarray]:
    """Square crop boxes (N, 4) int64 px by the rule the node name chose (``method``):
    around each detection, one box for the clip, or EMOCA's sliding windows."""
    if config.method == "transform_raw":
        boxes = transform_raw_bboxes(inputs["raw_bboxes"], config.extend_factor)
    elif config.method == "fixed":
        boxes = fixed_bboxes(inputs["landmarks"], config.scale)
    else:
        boxes = emoca_like_bboxes(
            inputs["landmarks"], config.scale, config.window_size, config.use_smoothing,
            config.equal_size, config.size_quantile,
        )  # fmt: skip
    return {"bboxes": boxes}


def crop_video(io: VideoIO, config: CropConfig) -> dict[str, StagedFile]:
    """Square face crops per frame: an HDF5 stack like ``images``, resampled as
    ``resample`` says, padded (never shifted) where a box runs past the frame edge; each
    crop at its frame's time. The frames are the video decoded again by the ``images``
    recipe where possible (:meth:`~dpl_assets.storage.video_io.VideoIO.frames`)."""
    height, width = (config.size_hw * 2)[:2]  # [side] or [height, width]
    staging = io.stage("crops")
    images: ImageStackRef = io["images"]
    times = images.frame_times()
    fps = float(images.attrs["fps"]) or None
    image_format = IMAGE_FORMAT_BY_EXT[config.output_ext]
    with (
        io.frames("images") as frames,
        ImageStackWriter(staging, "crops", image_format, config.quality, fps) as out,
    ):
        cropped = crop_frames(
            frames, io["bboxes"], (height, width), config.pad_mode, config.resample
        )
        for time_s, crop_rgb in zip(times, cropped, strict=True):
            out.append(crop_rgb, float(time_s))
    return {"crops": StagedFile(staging)}


TRANSFORM_RAW_BBOXES_NODE = NodeSpec(
    name="TransformRawBboxesNode",
    inputs=("raw_bboxes",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "transform_raw"},
    only=("extend_factor",),
    summary="a square around each detection (a frame without a box rejects the clip)",
    compute=compute_bboxes,
    group="crops",
)
FIXED_BBOXES_NODE = NodeSpec(
    name="FixedBboxesNode",
    inputs=("landmarks",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "fixed"},
    only=("scale",),
    summary="one box for the whole clip around every landmark",
    compute=compute_bboxes,
    group="crops",
)
EMOCA_LIKE_BBOXES_NODE = NodeSpec(
    name="EmocaLikeBboxesNode",
    inputs=("landmarks",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "emoca_like"},
    only=("scale", "window_size", "use_smoothing", "equal_size", "size_quantile"),
    summary="sliding-window boxes around the landmarks, smoothed, optionally of one size",
    compute=compute_bboxes,
    group="crops",
)
CROP_NODE = NodeSpec(
    name="CropNode",
    inputs=("images", "bboxes"),
    outputs=("crops",),
    config=CropConfig,
    summary="face crops per frame (HDF5 stack), padded where a box leaves the frame",
    compute=crop_video,
    group="crops",
)
