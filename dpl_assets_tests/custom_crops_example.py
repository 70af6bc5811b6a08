"""A custom node that writes an image stack and uses an optional input: small square crops
around the mouth, one per frame, levelled by the head's roll when ``head_pose`` is present.

A graph names it ``"dpl_assets_tests.custom_crops_example:MouthCropsNode"``
(``test_custom_node.py`` runs it end to end and packs its crops).
"""

import cv2
import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import FRAME, Datatype, StorageFormat
from dpl_assets.outcomes import InputRejected, StagedFile
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.handles import ImageStackRef
from dpl_assets.storage.image_stack import ImageStackWriter
from dpl_assets.storage.video_io import VideoIO

MOUTH_CROPS = Datatype(
    "mouth_crops",
    StorageFormat.IMAGE_STACK,
    (".h5",),
    "Square crops around the mouth per frame (HDF5 stack like images, PNG); black where no face.",
    per=FRAME,
)

# iBUG 68-point indices: the 20 lip points and the mouth corners.
LIPS = slice(48, 68)
MOUTH_LEFT, MOUTH_RIGHT = 48, 54
ROLL = 2  # head_pose columns: yaw, pitch, roll (degrees), tx, ty, tz


class MouthCropsConfig(NodeConfig):
    """``MouthCropsNode``."""

    size: int = Field(default=48, ge=8, le=512, description="Side of each crop (px).")
    scale: float = Field(default=1.6, gt=0, description="Crop side over the mouth width.")
    level: bool = Field(
        default=True, description="Rotate each crop by the head's roll when head_pose exists."
    )


def mouth_window(points: np.ndarray, roll_deg: float, size: int, scale: float) -> np.ndarray:
    """(2, 3) float64 affine from frame px to crop px: the lips' centre goes to the crop's
    centre, ``scale`` x the mouth width (corner to corner) to ``size`` px, and the frame
    turns by ``roll_deg`` degrees clockwise as printed (undoing a head roll of ``roll_deg``
    in ``head_pose``'s convention: counter-clockwise > 0)."""
    centre = points[LIPS].astype(np.float64).mean(axis=0)
    width = float(np.linalg.norm(points[MOUTH_RIGHT] - points[MOUTH_LEFT]))
    matrix = cv2.getRotationMatrix2D((0.0, 0.0), -roll_deg, size / (scale * width))
    matrix[:, 2] = size / 2 - matrix[:, :2] @ centre
    return matrix


def crop_mouth(
    frame: np.ndarray, points: np.ndarray, roll_deg: float, size: int, scale: float
) -> np.ndarray:
    """RGB uint8 (size, size, 3) crop of ``frame`` (H, W, 3) around the mouth of ``points``
    (68, 2) px, bilinear, black beyond the frame; all black when ``points`` has NaN."""
    if not np.isfinite(points).all():
        return np.zeros((size, size, 3), np.uint8)
    window = mouth_window(points, roll_deg, size, scale)
    return cv2.warpAffine(frame, window, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


def mouth_crops(io: VideoIO, config: MouthCropsConfig) -> dict[str, StagedFile]:
    """One mouth crop per frame of ``images``, at the frame's time: an image stack staged
    for the store. Uses ``head_pose`` (optional) to level the crops; frames without a
    pose are not turned. Rejects the video when landmarks and frames disagree in count."""
    images: ImageStackRef = io["images"]
    landmarks = io["landmarks"]
    pose = io.optional("head_pose") if config.level else None
    rolls = np.zeros(len(landmarks)) if pose is None else np.nan_to_num(pose[:, ROLL])
    if len(landmarks) != len(images):
        raise InputRejected(f"{len(landmarks)} landmark rows for {len(images)} frames")
    staged = io.stage("mouth_crops")
    fps = float(images.attrs.get("fps", 0)) or None
    times = images.frame_times()
    with (
        images.open() as frames,
        ImageStackWriter(staged, "mouth_crops", "png", fps=fps) as out,
    ):
        for frame, points, roll, time_s in zip(frames, landmarks, rolls, times, strict=True):
            crop = crop_mouth(frame, points, float(roll), config.size, config.scale)
            out.append(crop, float(time_s))
        out.attrs["levelled_by"] = "none" if pose is None else "head_pose"
    return {"mouth_crops": StagedFile(staged)}


MouthCropsNode = NodeSpec(
    name="MouthCropsNode",
    inputs=("images", "landmarks"),
    optional_inputs=("head_pose",),
    outputs=("mouth_crops",),
    config=MouthCropsConfig,
    summary="square mouth crops per frame (HDF5 stack), levelled by head_pose when present",
    compute=mouth_crops,
    declares=(MOUTH_CROPS,),
    announce=True,
)
