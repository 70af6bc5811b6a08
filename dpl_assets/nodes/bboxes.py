"""Bounding boxes family: raw detections or 68-point landmarks -> square crop boxes.

Coordinates are pixels, pixel ``(x, y)`` covering ``[x, x+1) x [y, y+1)``. Output
``bboxes``: int64 (N, 4) ``[x1, y1, x2, y2]`` with ``x2``/``y2`` exclusive and
``x2 - x1 == y2 - y1`` (square), one box per frame. Boxes may reach past the frame: crops
pad there (:mod:`dpl_assets.nodes.crops`), so nothing here clips them to the frame.

Landmark boxes follow the original (EMOCA/DECA's rule): centre = centre of the landmarks'
min/max extent, side = mean(width, height) x 1.1 x ``scale``.
"""

from __future__ import annotations

import numpy as np

from dpl_assets.outcomes import InputRejected

LANDMARK_EXTENT_MARGIN = 1.1
"""The original's (and DECA's) margin on the mean extent before ``scale`` applies."""

# The original's Savitzky-Golay smoothing: window (frames) for centres and for sizes, order.
SMOOTHING_CENTRE_WINDOW = 25
SMOOTHING_SIZE_WINDOW = 15
SMOOTHING_POLYORDER = 3
EXTENT_BLOCK_FRAMES = 4096  # frames of landmarks measured at a time (4.5 MB as float64)


def square_boxes(centre_x: np.ndarray, centre_y: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Integer square boxes int64 (N, 4) from centres and sides (N,) in pixels.

    The side is rounded to a whole number of pixels (at least 1), then the corner to the
    nearest pixel, so the box's centre is within half a pixel of the requested one.
    """
    side_px = np.maximum(np.floor(np.asarray(side, np.float64) + 0.5), 1.0)
    x1 = np.floor(np.asarray(centre_x, np.float64) - side_px / 2 + 0.5)
    y1 = np.floor(np.asarray(centre_y, np.float64) - side_px / 2 + 0.5)
    return np.stack([x1, y1, x1 + side_px, y1 + side_px], axis=-1).astype(np.int64)


def transform_raw_bboxes(raw_bboxes: np.ndarray, extend_factor: float) -> np.ndarray:
    """Detector boxes float (N, 5) ``[x1, y1, x2, y2, conf]`` -> square boxes int64 (N, 4).

    Each box becomes the square centred on it with side = max(w, h) x (1 + extend_factor).
    The confidence is dropped: it would not survive int64 (the original's (N, 5) int64
    kept it as 0 or 1), it stays in ``raw_bboxes``, and every ``bboxes`` is then (N, 4).
    Rejects the clip when any frame has no box (NaN), as the original did.
    """
    boxes = np.asarray(raw_bboxes, np.float64)[:, :4]
    missing = int(np.isnan(boxes).any(axis=1).sum())
    if missing:
        raise InputRejected(f"no face box in {missing} of {len(boxes)} frames")
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height) * (1.0 + extend_factor)
    return square_boxes((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, side)


def _extents(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame ``[xmin, ymin, xmax, ymax]`` float (N, 4) of landmarks (N, K, 2).

    A frame with any non-finite point counts as faceless: its row is NaN. Frames are taken
    :data:`EXTENT_BLOCK_FRAMES` at a time, so the float64 copies stay small on long clips.
    """
    landmarks = np.asarray(landmarks)
    extents = np.full((len(landmarks), 4), np.nan)
    for start in range(0, len(landmarks), EXTENT_BLOCK_FRAMES):
        points = np.asarray(landmarks[start : start + EXTENT_BLOCK_FRAMES], np.float64)[..., :2]
        valid = np.isfinite(points).all(axis=(1, 2))
        rows = extents[start : start + EXTENT_BLOCK_FRAMES]  # a view: writes into extents
        rows[valid, :2] = points[valid].min(axis=1)
        rows[valid, 2:] = points[valid].max(axis=1)
    return extents


def _centre_and_side(extents: np.ndarray, scale: float) -> tuple[np.ndarray, ...]:
    """Centres x, y and sides (...,) of extents (..., 4) by the module's landmark rule."""
    xmin, ymin, xmax, ymax = np.moveaxis(extents, -1, 0)
    side = ((xmax - xmin) + (ymax - ymin)) / 2 * LANDMARK_EXTENT_MARGIN * scale
    return (xmin + xmax) / 2, (ymin + ymax) / 2, side


def fixed_bboxes(landmarks: np.ndarray, scale: float = 1.25) -> np.ndarray:
    """One box for the whole clip: int64 (N, 4), the same square repeated for every frame.

    ``landmarks`` float (N, 68, 2) in pixels; faceless frames (NaN) are ignored. The box
    frames the landmarks' extent over all other frames (side = mean(w, h) x 1.1 x scale).
    Rejects a clip without any face.
    """
    extents = _extents(landmarks)
    if np.isnan(extents).all():
        raise InputRejected("no face in any frame")
    clip_extent = np.concatenate([np.nanmin(extents[:, :2], 0), np.nanmax(extents[:, 2:], 0)])
    box = square_boxes(*_centre_and_side(clip_extent[None], scale))
    return np.repeat(box, len(extents), axis=0)


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over frame index of NaN entries; ends hold the nearest value."""
    valid = ~np.isnan(values)
    frames = np.arange(len(values))
    return np.interp(frames, frames[valid], values[valid])


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Savitzky-Golay (order 3) over ``window`` frames, shortened to fit a short clip.

    When the clip leaves no more than ``SMOOTHING_POLYORDER + 1`` frames for the window,
    the fit passes through every point: the values are returned unchanged.
    """
    window = min(window, len(values) if len(values) % 2 else len(values) - 1)
    if window <= SMOOTHING_POLYORDER:
        return values
    from scipy.signal import savgol_filter  # ~1 s to import: at first use

    return np.asarray(savgol_filter(values, window, SMOOTHING_POLYORDER))


def emoca_like_bboxes(
    landmarks: np.ndarray,
    scale: float = 1.25,
    window_size: int = 5,
    use_smoothing: bool = True,
    equal_size: bool = True,
    size_quantile: float = 0.75,
) -> np.ndarray:
    """Per-frame square boxes int64 (N, 4) that follow the face smoothly.

    ``landmarks`` float (N, 68, 2) in pixels, NaN where a frame has no face.

    - Frame i's box frames the landmarks' extent over the ``window_size`` frames
      ``[i - window_size // 2, i + window_size - window_size // 2)`` (clipped to the clip;
      faceless frames ignored), side = mean(w, h) x 1.1 x ``scale``, as the original.
    - Frames whose window holds no face take centre and side interpolated linearly from
      the nearest frames that have one (``np.interp``; the clip's ends hold the edge value).
    - ``use_smoothing``: Savitzky-Golay filter (order 3) over 25 frames on the centres and
      15 frames on the sides (the original's choice), on shorter clips over the whole clip.
    - ``equal_size``: every side becomes the ``size_quantile`` quantile of the sides.

    Rejects a clip without any face.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be at least 1, not {window_size}")
    extents = _extents(landmarks)
    if np.isnan(extents).all():
        raise InputRejected("no face in any frame")
    from scipy.ndimage import maximum_filter1d, minimum_filter1d  # on use: 0.3 s of start-up

    # A sliding min/max over frames; faceless frames must never win, so they become +-inf.
    low = minimum_filter1d(
        np.nan_to_num(extents[:, :2], nan=np.inf), window_size, axis=0, mode="nearest"
    )
    high = maximum_filter1d(
        np.nan_to_num(extents[:, 2:], nan=-np.inf), window_size, axis=0, mode="nearest"
    )
    windowed = np.concatenate([low, high], axis=1)
    windowed[~np.isfinite(windowed).all(axis=1)] = np.nan
    centre_x, centre_y, side = (_fill_gaps(v) for v in _centre_and_side(windowed, scale))
    if use_smoothing:
        centre_x = _smooth(centre_x, SMOOTHING_CENTRE_WINDOW)
        centre_y = _smooth(centre_y, SMOOTHING_CENTRE_WINDOW)
        side = _smooth(side, SMOOTHING_SIZE_WINDOW)
    if equal_size:
        side = np.full_like(side, np.quantile(side, size_quantile))
    return square_boxes(centre_x, centre_y, side)
