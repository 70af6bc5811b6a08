"""Frames family: video -> image stack of upright RGB frames with timestamps.

Output ``images``: HDF5 image stack (see :mod:`dpl_assets.storage.image_stack`), one JPEG or
PNG per frame, timestamps in seconds from the container start, native resolution unless
``max_side`` asks for a downscale. Streams frame by frame: memory does not grow with length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dpl_assets.media.frames import decode_frames, resample_frames
from dpl_assets.outcomes import InputRejected
from dpl_assets.storage.image_stack import ImageStackWriter

IMAGE_FORMAT_BY_EXT = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png"}


@dataclass
class FrameStackInfo:
    """What :func:`extract_frames` wrote: frame count, size (pixels) and time span (s)."""

    frames: int
    width: int
    height: int
    first_time_s: float
    last_time_s: float


def fit_max_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (never upscale) so the longer side is at most ``max_side`` pixels."""
    height, width = rgb.shape[:2]
    if max_side <= 0 or max(height, width) <= max_side:
        return rgb
    ratio = max_side / max(height, width)
    size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def extract_frames(
    source: Path,
    destination: Path,
    *,
    ext: str = ".jpg",
    quality: int = 95,
    fps: float | None = None,
    max_side: int = 0,
) -> FrameStackInfo:
    """Decode ``source`` into an image stack at ``destination``.

    Args:
        ext: ``.jpg`` (JPEG, the original's default) or ``.png`` (lossless).
        quality: JPEG quality 1-100.
        fps: resample to this constant rate by timestamp; None keeps every decoded frame.
        max_side: downscale so the longer side is at most this many pixels; 0 = native.

    Rejects a file that cannot be opened, has no video stream, or decodes to no frame.
    """
    if ext.lower() not in IMAGE_FORMAT_BY_EXT:
        raise ValueError(f"ext must be one of {sorted(IMAGE_FORMAT_BY_EXT)}, not {ext!r}")
    frames = decode_frames(source)
    if fps:
        frames = resample_frames(frames, fps)
    info: FrameStackInfo | None = None
    with ImageStackWriter(
        destination, "images", IMAGE_FORMAT_BY_EXT[ext.lower()], quality, fps
    ) as stack:
        for frame in frames:
            rgb = fit_max_side(frame.rgb, max_side)
            stack.append(rgb, frame.time_s)
            if info is None:
                info = FrameStackInfo(0, rgb.shape[1], rgb.shape[0], frame.time_s, frame.time_s)
            info.frames += 1
            info.last_time_s = frame.time_s
        if info is None:
            raise InputRejected(f"{source}: the video stream decodes to no frame")
    return info
