"""EMOCA's input frames: a video's face crops resized to the encoder's input, or its frames
cut by its boxes on the fly (the original's EmocaFromImagesNode), streamed in batches."""

from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from dpl_assets.nodes.crops import crop_frames


def resized(frames: Iterable[np.ndarray], side: int) -> Iterator[np.ndarray]:
    """uint8 (side, side, 3) RGB of each uint8 (H, W, 3) crop, area-resampled."""
    for frame in frames:
        yield cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA)


def cut(frames: Iterable[np.ndarray], boxes: np.ndarray, side: int) -> Iterator[np.ndarray]:
    """uint8 (side, side, 3) RGB of frame i inside ``boxes[i]`` (int (N, 4) px); raises
    ``ValueError`` when frames and boxes differ in number (see
    :func:`~dpl_assets.nodes.crops.crop_frames`)."""
    yield from crop_frames(frames, boxes, (side, side))


def batches(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """float32 (K, 3, H, W) batches in [0, 1] of at most ``size`` uint8 (H, W, 3) frames
    (bounded memory however long the video)."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            batch = []
    if batch:
        yield np.stack(batch).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
