"""Frames family: video -> image stack of upright RGB frames with timestamps.

Output ``images``: HDF5 image stack (see :mod:`dpl_assets.storage.image_stack`), one JPEG or
PNG per frame, timestamps in seconds from the container start, native resolution unless
``max_side`` asks for a downscale. Streams frame by frame: memory does not grow with length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dpl_assets.datatypes import FRAME_REFERENCE
from dpl_assets.media.frames import DECODE_RECIPE_ATTR, DecodeDamage, DecodeRecipe
from dpl_assets.outcomes import InputRejected
from dpl_assets.storage.frame_cache import EntryWriter
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
    damage: DecodeDamage


def extract_frames(
    source: Path,
    destination: Path,
    *,
    ext: str = ".jpg",
    quality: int = 95,
    fps: float | None = None,
    max_side: int = 0,
    keep: EntryWriter | None = None,
) -> FrameStackInfo:
    """Decode ``source`` into an image stack at ``destination``.

    Args:
        ext: ``.jpg`` (JPEG, the original's default) or ``.png`` (lossless).
        quality: JPEG quality 1-100.
        fps: resample to this constant rate by timestamp; None keeps every decoded frame.
        max_side: downscale so the longer side is at most this many pixels; 0 = native.
        keep: where the decoded frames are also kept for the steps after this one
            (:mod:`dpl_assets.storage.frame_cache`); a damaged video's are not.

    Damaged data is skipped as ffmpeg skips it: what decodes is kept, and the spans where
    frames are missing are stored in the stack's ``damaged_spans`` attribute ((K, 2)
    seconds on the container clock; empty when clean) with ``decode_errors`` (a count) and
    ``damage`` (one line saying what happened).

    Rejects a file that cannot be opened, has no video stream, or decodes to no frame.
    """
    if ext.lower() not in IMAGE_FORMAT_BY_EXT:
        raise ValueError(f"ext must be one of {sorted(IMAGE_FORMAT_BY_EXT)}, not {ext!r}")
    damage = DecodeDamage()
    recipe = DecodeRecipe(fps=fps, max_side=max_side)
    info: FrameStackInfo | None = None
    with ImageStackWriter(
        destination, FRAME_REFERENCE, IMAGE_FORMAT_BY_EXT[ext.lower()], quality, fps
    ) as stack:
        for frame in recipe.frames(source, damage):
            rgb = frame.rgb
            stack.append(rgb, frame.time_s)
            if keep is not None:
                keep.add(frame)
            if info is None:
                info = FrameStackInfo(
                    0, rgb.shape[1], rgb.shape[0], frame.time_s, frame.time_s, damage
                )
            info.frames += 1
            info.last_time_s = frame.time_s
        if keep is not None and (damage.packet_errors or damage.dropped_frames):
            keep.drop()  # readers decode the stored images of a damaged video
        if info is None:
            detail = f" ({damage.summary()})" if damage.summary() else ""
            raise InputRejected(f"{source}: the video stream decodes to no frame{detail}")
        stack.attrs.update(
            {
                "damaged_spans": np.asarray(damage.spans, np.float64).reshape(-1, 2),
                "decode_errors": damage.packet_errors + damage.dropped_frames,
                "damage": damage.summary(),
                DECODE_RECIPE_ATTR: recipe.to_json(),
            }
        )
    return info
