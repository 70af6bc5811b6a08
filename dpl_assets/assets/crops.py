"""Crop assets: square boxes per frame, then face crops as an HDF5 image stack."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from dpl_assets.assets.batch import per_video_asset, run_videos
from dpl_assets.assets.config import BboxesConfig, CropConfig
from dpl_assets.nodes.bboxes import emoca_like_bboxes, fixed_bboxes, transform_raw_bboxes
from dpl_assets.nodes.crops import crop_frames
from dpl_assets.nodes.frames import IMAGE_FORMAT_BY_EXT
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.storage.io_manager import ArtifactStorage, LazyArtifacts
from dpl_assets.storage.video_io import VideoIO


def compute_bboxes(config: BboxesConfig, inputs: Mapping[str, Any]) -> Any:
    """Dispatch to the box rule the node name chose (``method``)."""
    if config.method == "transform_raw":
        return transform_raw_bboxes(inputs["raw_bboxes"], config.extend_factor)
    if config.method == "fixed":
        return fixed_bboxes(inputs["landmarks"], config.scale)
    return emoca_like_bboxes(
        inputs["landmarks"], config.scale, config.window_size, config.use_smoothing,
        config.equal_size, config.size_quantile,
    )  # fmt: skip


@per_video_asset(group_name="crops")
def bboxes(
    context: dg.AssetExecutionContext,
    config: BboxesConfig,
    storage: ArtifactStorage,
    raw_bboxes: LazyArtifacts,
    landmarks: LazyArtifacts,
) -> dict:
    """Square crop boxes (N, 4) int64 (``TransformRawBboxesNode``, ``FixedBboxesNode``,
    ``EmocaLikeBboxesNode``); only the input the chosen rule needs is read."""
    needed = (
        {"raw_bboxes": raw_bboxes} if config.method == "transform_raw" else {"landmarks": landmarks}
    )
    return run_videos(
        context, storage, recompute=config.recompute, inputs=needed,
        compute_one=lambda _, inputs: compute_bboxes(config, inputs),
    )  # fmt: skip


@per_video_asset(group_name="crops")
def crops(
    context: dg.AssetExecutionContext,
    config: CropConfig,
    storage: ArtifactStorage,
    images: LazyArtifacts,
    bboxes: LazyArtifacts,
) -> dict:
    """Square face crops per frame (``CropNode``): HDF5 stack like ``images``, Lanczos
    resampling, padded (never shifted) where a box runs past the frame edge."""
    height, width = (config.size_hw * 2)[:2]  # [side] or [height, width]

    def crop(_: str, io: VideoIO) -> StagedFile:
        staging = io.stage("crops")
        image_format = IMAGE_FORMAT_BY_EXT[config.output_ext]
        images: ImageStackRef = io["images"]
        # A crop sits at its frame's time (the one rule: the frames' own timestamps).
        times = images.frame_times()
        fps = float(images.attrs["fps"]) or None
        with (
            images.open() as frames,
            ImageStackWriter(staging, "crops", image_format, config.quality, fps) as out,
        ):
            cropped = crop_frames(iter(frames), io["bboxes"], (height, width), config.pad_mode)
            for time_s, crop_rgb in zip(times, cropped, strict=True):
                out.append(crop_rgb, float(time_s))
        return StagedFile(staging)

    return run_videos(
        context, storage, recompute=config.recompute,
        inputs={"images": images, "bboxes": bboxes}, compute_one=crop, workers=config.num_jobs,
    )  # fmt: skip


TRANSFORM_RAW_BBOXES_NODE = NodeSpec(
    name="TransformRawBboxesNode",
    inputs=("raw_bboxes",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "transform_raw"},
    only=("extend_factor",),
    summary="a square around each detection (a frame without a box rejects the clip)",
    asset=bboxes,
)
FIXED_BBOXES_NODE = NodeSpec(
    name="FixedBboxesNode",
    inputs=("landmarks",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "fixed"},
    only=("scale",),
    summary="one box for the whole clip around every landmark",
    asset=bboxes,
)
EMOCA_LIKE_BBOXES_NODE = NodeSpec(
    name="EmocaLikeBboxesNode",
    inputs=("landmarks",),
    outputs=("bboxes",),
    config=BboxesConfig,
    fixed={"method": "emoca_like"},
    only=("scale", "window_size", "use_smoothing", "equal_size", "size_quantile"),
    summary="sliding-window boxes around the landmarks, smoothed, optionally of one size",
    asset=bboxes,
)
CROP_NODE = NodeSpec(
    name="CropNode",
    inputs=("images", "bboxes"),
    outputs=("crops",),
    config=CropConfig,
    summary="face crops per frame (HDF5 stack), padded where a box leaves the frame",
    asset=crops,
)
