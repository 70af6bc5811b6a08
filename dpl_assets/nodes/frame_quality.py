"""Quality per frame: sharpness, face size, head yaw and pitch, brightness, and thresholds.

Every frame with a face gets one row of :data:`FRAME_QUALITY_COLUMNS`:

- ``sharpness``: variance of the Laplacian (OpenCV's 3x3 aperture, ``cv2.Laplacian`` with
  ``ksize=1``; Pech-Pacheco et al., "Diatom autofocusing in brightfield microscopy",
  ICPR 2000) of the grey face crop. The crop is the face aligned to the ArcFace template
  at a fixed ``crop_size`` (:func:`dpl_assets.nodes.aligned_crops.warp_aligned`, linear
  interpolation, no smoothing), so values compare across videos and face sizes: a small
  face enlarged to the crop is blurrier than a large one shrunk to it. Where the crop runs
  past the frame its black border adds edges, so sharpness reads high there.
- ``face_px``: side of that aligned square in frame pixels (crop side over the similarity
  scale): how many source pixels the face crop is made of; it scales with the face.
- ``yaw_deg``, ``pitch_deg``: head pose in degrees, from the ``head_pose`` datatype
  (:mod:`dpl_assets.nodes.head_pose`) when given, else the same solvePnP fit run here
  on the landmarks. Absolute pitch carries the generic 3D face's bias (~20 degrees on a
  frontal photo), so leave room for it in ``max_abs_pitch``.
- ``brightness``: mean luma (ITU-R BT.601 weights, ``cv2.COLOR_RGB2GRAY``) of the grey
  face crop, 0-255.

Grey: ``cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)`` (uint8). Frames without a face, or whose
pose fit failed, are whole NaN rows. :func:`passing_frames` applies thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from dpl_assets.nodes.aligned_crops import alignment_affines, warp_aligned

FRAME_QUALITY_COLUMNS: tuple[str, ...] = (
    "sharpness",
    "face_px",
    "yaw_deg",
    "pitch_deg",
    "brightness",
)
"""Names of the columns of a quality table, in order (the registry declares them as the
datatype's ``columns`` too, for readers of the files)."""

DEFAULT_CROP_SIZE = 112
"""Side (px) of the crop sharpness and brightness are measured on: ArcFace's own."""


def crop_sharpness_brightness(crop_rgb: np.ndarray) -> tuple[float, float]:
    """(variance of the Laplacian, mean luma 0-255) of an RGB uint8 (h, w, 3) crop's grey
    image (see the module for the definitions)."""
    grey = cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var()), float(grey.mean())


def quality_table(
    frames: Iterable[np.ndarray],
    landmarks: np.ndarray,
    yaw_pitch_deg: np.ndarray,
    crop_size: int = DEFAULT_CROP_SIZE,
) -> np.ndarray:
    """The ``frame_quality`` table float32 (N, 5) (:data:`FRAME_QUALITY_COLUMNS`).

    ``frames``: RGB uint8 (H, W, 3), N of them (consumed one at a time). ``landmarks``:
    (N, 68, 2) px, NaN rows where no face. ``yaw_pitch_deg``: (N, 2) degrees (NaN where
    unknown). ``crop_size``: side (px) of the aligned crop measured. Rows with any NaN are
    whole NaN rows. ValueError when the counts disagree.
    """
    affines = alignment_affines(landmarks, "arcface", crop_size)
    if len(yaw_pitch_deg) != len(affines):
        raise ValueError(f"{len(yaw_pitch_deg)} poses but {len(affines)} landmark rows")
    table = np.full((len(affines), len(FRAME_QUALITY_COLUMNS)), np.nan)
    scale = np.hypot(affines[:, 0, 0], affines[:, 1, 0])  # a similarity's [[a, -b], [b, a]]
    table[:, 1] = crop_size / scale
    table[:, 2:4] = yaw_pitch_deg
    count = 0
    for frame, affine, row in zip(frames, affines, table, strict=False):
        if np.isfinite(affine).all():
            row[0], row[4] = crop_sharpness_brightness(
                warp_aligned(frame, affine, crop_size, "linear")
            )
        count += 1
    if count != len(affines):
        raise ValueError(f"{count} frames but {len(affines)} landmark rows")
    table[~np.isfinite(table).all(axis=1)] = np.nan
    return table.astype(np.float32)


@dataclass(frozen=True)
class QualityThresholds:
    """Bounds a frame must meet (inclusive): sharpness, face side (px), |yaw| and |pitch|
    (degrees), brightness (0-255). The defaults bound nothing (the node's params have
    its own defaults)."""

    min_sharpness: float = 0.0
    min_face_px: float = 0.0
    max_abs_yaw: float = 180.0
    max_abs_pitch: float = 180.0
    min_brightness: float = 0.0
    max_brightness: float = 255.0


def passing_frames(table: np.ndarray, thresholds: QualityThresholds) -> np.ndarray:
    """(N,) bool: frames of ``table`` (N, 5) (:data:`FRAME_QUALITY_COLUMNS`) with a face
    meeting every threshold; NaN rows (no face) fail."""
    sharpness, face_px, yaw, pitch, brightness = np.asarray(table, np.float64).T
    with np.errstate(invalid="ignore"):  # NaN compares False: no face fails
        return (
            (sharpness >= thresholds.min_sharpness)
            & (face_px >= thresholds.min_face_px)
            & (np.abs(yaw) <= thresholds.max_abs_yaw)
            & (np.abs(pitch) <= thresholds.max_abs_pitch)
            & (brightness >= thresholds.min_brightness)
            & (brightness <= thresholds.max_brightness)
        )
