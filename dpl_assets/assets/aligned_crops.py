"""Aligned crop node: faces warped onto a 5-point template, with the affine of every frame;
its asset is generated from this declaration."""

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.aligned_crops import (
    Interpolation,
    alignment_affines,
    template_points,
    warp_aligned,
)
from dpl_assets.nodes.frames import IMAGE_FORMAT_BY_EXT
from dpl_assets.outcomes import StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.storage.video_io import VideoIO

FRAMES_WITHOUT_FACE_ATTR = "frames_without_face"
"""Attribute of an ``aligned_crops`` stack: frames left black (no face, NaN affine)."""


class AlignedCropConfig(NodeConfig):
    """``AlignedCropNode``."""

    size: int = Field(default=256, ge=8, description="Crop side in pixels (square).")
    template: Literal["arcface", "custom"] = Field(
        default="arcface",
        description="'arcface' (InsightFace's 5-point template) or 'custom' (custom_points).",
    )
    custom_points: list[list[float]] | None = Field(
        default=None,
        description="template 'custom': five [u, v] points in unit coordinates of the crop "
        "(eye centres, nose tip, mouth corners; image-left first).",
    )
    smoothing: int = Field(
        default=5, ge=0,
        description="Centred moving average of the five points over this many frames, "
        "within runs of frames with a face; 0 = off.",
    )  # fmt: skip
    interpolation: Interpolation = Field(
        default="cubic", description="cv2.warpAffine interpolation: linear, cubic, lanczos."
    )
    output_ext: Literal[".jpg", ".png"] = Field(default=".jpg", description="Crop image format.")
    quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    num_jobs: int = Field(default=2, ge=1, description="Videos aligned in parallel.")

    @model_validator(mode="after")
    def _template_is_usable(self) -> "AlignedCropConfig":
        """A graph with a bad template fails before any work, naming it."""
        points = self.custom_points if self.template == "custom" else "arcface"
        if points is None:
            raise ValueError("template 'custom' needs custom_points (five [u, v] points)")
        template_points(points, self.size)
        return self


def align_video(io: VideoIO, config: AlignedCropConfig) -> dict[str, Any]:
    """Aligned face crops (an HDF5 stack in CropNode's layout, each at its frame's time)
    and the affine (N, 2, 3) float32 of each frame (frame px -> crop px; NaN and a black
    crop where there is no face), from the ``landmarks``. The frames are the video decoded again by
    the ``images`` recipe where possible (:meth:`~dpl_assets.storage.video_io.VideoIO.frames`).
    """
    template = config.custom_points if config.template == "custom" else "arcface"
    assert template is not None  # the config's validator says so
    target_px = template_points(template, config.size)
    affines = alignment_affines(io["landmarks"], template, config.size, config.smoothing)
    images: ImageStackRef = io["images"]
    times = images.frame_times()
    staging = io.stage("aligned_crops")
    image_format = IMAGE_FORMAT_BY_EXT[config.output_ext]
    fps = float(images.attrs["fps"]) or None
    with (
        io.frames("images") as frames,
        ImageStackWriter(staging, "aligned_crops", image_format, config.quality, fps) as out,
    ):
        for time_s, frame, affine in zip(times, frames, affines, strict=True):
            out.append(warp_aligned(frame, affine, config.size, config.interpolation), time_s)
        out.attrs[FRAMES_WITHOUT_FACE_ATTR] = int(np.isnan(affines[:, 0, 0]).sum())
        out.attrs["template_px"] = target_px
    return {
        "aligned_crops": StagedFile(staging),
        "aligned_affines": affines.astype(np.float32),
    }


def aligned_totals(per_output: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """The step's totals, on its ``aligned_affines`` output: frames aligned and frames
    left black (no face)."""
    done = [a for a in per_output["aligned_affines"].values() if isinstance(a, np.ndarray)]
    missing = sum(int(np.isnan(a[:, 0, 0]).sum()) for a in done)
    return {
        "aligned_affines": {
            "frames_aligned": sum(len(a) for a in done) - missing,
            "frames_without_face": missing,
        }
    }


ALIGNED_CROP_NODE = NodeSpec(
    name="AlignedCropNode",
    inputs=("images", "landmarks"),
    outputs=("aligned_crops", "aligned_affines"),
    config=AlignedCropConfig,
    summary="face crops aligned to a 5-point template (similarity, smoothed), with affines",
    compute=align_video,
    summarize=aligned_totals,
    group="alignment",
)
