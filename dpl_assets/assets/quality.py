"""Frame quality node: sharpness, face size, yaw/pitch and brightness per frame, and which
frames pass the thresholds; its asset is generated from this declaration."""

from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.frame_quality import (
    DEFAULT_CROP_SIZE,
    FRAME_QUALITY_COLUMNS,
    QualityThresholds,
    passing_frames,
    quality_table,
)
from dpl_assets.nodes.head_pose import head_pose
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.video_io import VideoIO


class FrameQualityConfig(NodeConfig):
    """``FrameQualityNode``."""

    crop_size: int = Field(
        default=DEFAULT_CROP_SIZE, ge=16,
        description="Side (px) of the aligned face crop sharpness and brightness are "
        "measured on (fixed, so values compare across videos).",
    )  # fmt: skip
    min_sharpness: float = Field(
        default=20.0, ge=0,
        description="Least Laplacian variance of the grey crop (a real face photo: ~600 "
        "sharp, ~37 after a Gaussian blur of sigma 1.5 px, ~9 of sigma 3).",
    )  # fmt: skip
    min_face_px: float = Field(
        default=64.0, ge=0, description="Least side (frame px) of the aligned face square."
    )
    max_abs_yaw: float = Field(default=45.0, ge=0, description="Largest |yaw|, degrees.")
    max_abs_pitch: float = Field(
        default=45.0, ge=0,
        description="Largest |pitch|, degrees (the generic 3D face reads ~20 on a frontal face).",
    )  # fmt: skip
    min_brightness: float = Field(default=40.0, ge=0, le=255, description="Least mean luma.")
    max_brightness: float = Field(default=220.0, ge=0, le=255, description="Largest mean luma.")
    num_jobs: int = Field(default=2, ge=1, description="Videos measured in parallel.")

    @model_validator(mode="after")
    def _brightness_range(self) -> "FrameQualityConfig":
        if self.min_brightness > self.max_brightness:
            raise ValueError(
                f"min_brightness {self.min_brightness} is above "
                f"max_brightness {self.max_brightness}"
            )
        return self


def measure_quality(io: VideoIO, config: FrameQualityConfig) -> dict[str, np.ndarray]:
    """``frame_quality`` (N, 5) float32 (columns :data:`FRAME_QUALITY_COLUMNS`; NaN rows
    where no face) and ``frame_quality_ok`` (N,) uint8 (1: a face within every threshold).
    Yaw and pitch come from ``head_pose`` when the graph makes it, else from the same
    solvePnP fit on the landmarks (:func:`dpl_assets.nodes.head_pose.head_pose`)."""
    landmarks = io["landmarks"]
    pose = io.optional("head_pose")
    if pose is None:
        images: ImageStackRef = io["images"]
        size = (int(images.attrs["width"]), int(images.attrs["height"]))
        pose = head_pose(landmarks, size)
    with io.frames("images") as frames:
        table = quality_table(frames, landmarks, pose[:, :2], config.crop_size)
    fields = QualityThresholds.__dataclass_fields__
    thresholds = QualityThresholds(**config.model_dump(include=set(fields)))
    ok = passing_frames(table, thresholds)
    return {"frame_quality": table, "frame_quality_ok": ok.astype(np.uint8)}


def quality_totals(per_output: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The step's totals: the table's column names (on ``frame_quality``), frames passing
    and failing the thresholds (on ``frame_quality_ok``)."""
    done = [m for m in per_output["frame_quality_ok"].values() if isinstance(m, np.ndarray)]
    passing = sum(int(m.sum()) for m in done)
    return {
        "frame_quality": {"columns": ", ".join(FRAME_QUALITY_COLUMNS)},
        "frame_quality_ok": {
            "frames_ok": passing,
            "frames_not_ok": sum(len(m) for m in done) - passing,
        },
    }


FRAME_QUALITY_NODE = NodeSpec(
    name="FrameQualityNode",
    inputs=("images", "landmarks"),
    outputs=("frame_quality", "frame_quality_ok"),
    config=FrameQualityConfig,
    summary="sharpness, face size, yaw/pitch, brightness per frame, and thresholds",
    optional_inputs=("head_pose",),
    compute=measure_quality,
    summarize=quality_totals,
    group="quality",
)
