"""Aligned face crops: a similarity transform of five landmarks onto a fixed template.

Per frame, the five points of the 68-point landmarks (:data:`FIVE_POINT_INDICES`: the
two eye centres, the nose tip, the two mouth corners) are fitted to the template's five
points by the least-squares similarity transform (rotation, uniform scale, translation;
Umeyama 1991, closed form, via :class:`skimage.transform.SimilarityTransform`), and the
frame is warped with that transform (:func:`cv2.warpAffine`) into a square crop.

Template: :data:`ARCFACE_TEMPLATE` is the 5-point template of ArcFace / InsightFace
(``arcface_dst`` in ``python-package/insightface/utils/face_align.py`` of
deepinsight/insightface; Deng et al., "ArcFace", CVPR 2019), given there in pixels of a
112 x 112 crop and kept here in unit coordinates (divided by 112), so it scales to any
crop size. Order: image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner (the 68-point layout's image-left side first, as iBUG's).

Smoothing (``smoothing`` frames): the five points are averaged over a centred window
within each run of frames with a face, the window shrinking symmetrically near a run's
ends (so motion at constant velocity is unchanged), never reaching across a frame
without a face.

Coordinates: pixels, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)`` (the landmarks' convention); in a crop of side ``size`` the
template point ``(u, v)`` is at ``(u * size, v * size)``. An affine (2, 3) ``M`` maps a
frame point ``p`` to the crop point ``M[:, :2] @ p + M[:, 2]``; :func:`to_crop` and
:func:`to_frame` map points both ways. Frames without a face have a NaN affine and a
black crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np

from dpl_assets.media.timeline import true_runs

ARCFACE_TEMPLATE: np.ndarray = (
    np.array(
        [
            [38.2946, 51.6963],
            [73.5318, 51.5014],
            [56.0252, 71.7366],
            [41.5493, 92.3655],
            [70.7299, 92.2041],
        ]
    )
    / 112.0
)
"""InsightFace's ArcFace 5-point template (5, 2) in unit coordinates of the crop (see the
module docstring for the source and the point order)."""

FIVE_POINT_INDICES: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)),  # image-left eye: mean of its six points
    tuple(range(42, 48)),  # image-right eye
    (30,),  # nose tip
    (48,),  # image-left mouth corner
    (54,),  # image-right mouth corner
)
"""The five template points as groups of 68-point (iBUG) landmark indices (each point is
its group's mean)."""

Interpolation = Literal["linear", "cubic", "lanczos"]
INTERPOLATIONS: dict[str, int] = {
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}

PYRAMID_BELOW = 0.5
"""Warp scale under which the frame's pixels under the crop are first halved by a Gaussian
pyramid (``cv2.pyrDown``) until the warp shrinks by 2x at most: ``warpAffine``'s kernels
do not widen when shrinking, so they would skip source pixels and alias (CropNode averages
pixel areas for the same reason; on a 331 px region a ``pyrDown`` took 0.21 ms, a
non-integer ``INTER_AREA`` resize 1.7 ms)."""


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five template points of 68-point landmarks (..., 68, 2) px -> (..., 5, 2) px
    float64: eye centres (mean of 36-41 and of 42-47), nose tip 30, mouth corners 48, 54.
    NaN landmarks give NaN points."""
    points = np.asarray(landmarks, np.float64)
    if points.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must be (..., 68, 2), not {points.shape}")
    return np.stack([points[..., list(group), :].mean(axis=-2) for group in FIVE_POINT_INDICES], -2)


def template_points(template: str | Sequence[Sequence[float]], size: int) -> np.ndarray:
    """Template (5, 2) float64 in pixels of a ``size`` x ``size`` crop.

    ``template``: ``"arcface"`` (:data:`ARCFACE_TEMPLATE`) or five ``(u, v)`` points in
    unit coordinates of the crop (0..1, in :data:`FIVE_POINT_INDICES`'s order). ValueError
    for another name, a shape other than (5, 2), or points that are not finite.
    """
    if isinstance(template, str):
        if template != "arcface":
            raise ValueError(f"template must be 'arcface' or five (u, v) points, not {template!r}")
        unit = ARCFACE_TEMPLATE
    else:
        unit = np.asarray(template, np.float64)
    if unit.shape != (5, 2) or not np.isfinite(unit).all():
        raise ValueError(f"a template is five finite (u, v) points, not {unit.tolist()}")
    if size < 1:
        raise ValueError(f"crop size must be positive, not {size}")
    return unit * float(size)


def smooth_points(points: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average (N, ...) over ``window`` frames within each run of finite rows.

    ``points``: float (N, ...) with whole NaN rows where there is no face. Near a run's
    ends the window shrinks symmetrically (a frame ``k`` frames from the end averages
    ``2k + 1`` frames), so values changing linearly in time come out unchanged; NaN rows
    stay NaN and no average reaches across them. ``window`` <= 1 returns a copy. An even
    ``window`` acts as ``window + 1``.
    """
    values = np.array(points, np.float64)
    half = window // 2
    if half < 1 or len(values) == 0:
        return values
    flat = values.reshape(len(values), -1)
    finite = np.isfinite(flat).all(axis=1)
    for start, end in zip(*true_runs(finite), strict=True):
        run = flat[start:end]
        sums = np.concatenate([np.zeros((1, run.shape[1])), np.cumsum(run, axis=0)])
        index = np.arange(end - start)
        reach = np.minimum(half, np.minimum(index, end - start - 1 - index))
        flat[start:end] = (sums[index + reach + 1] - sums[index - reach]) / (2 * reach + 1)[:, None]
    return flat.reshape(values.shape)


def similarity_affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) float64 mapping ``source`` (K, 2) onto ``target``
    (K, 2) (Umeyama's closed form, :meth:`skimage.transform.SimilarityTransform.from_estimate`).
    NaN (2, 3) when ``source`` has a NaN or is degenerate (all points coincide)."""
    if not np.isfinite(source).all():
        return np.full((2, 3), np.nan)
    from skimage.transform import SimilarityTransform  # here: scipy and skimage load ~0.3 s

    fitted = SimilarityTransform.from_estimate(source, target)
    if not fitted:  # FailedEstimation: degenerate points
        return np.full((2, 3), np.nan)
    return np.asarray(fitted.params[:2], np.float64)


def alignment_affines(
    landmarks: np.ndarray,
    template: str | Sequence[Sequence[float]] = "arcface",
    size: int = 256,
    smoothing: int = 0,
) -> np.ndarray:
    """Per-frame affines (N, 2, 3) float64 mapping frame pixels to aligned-crop pixels.

    ``landmarks``: (N, 68, 2) px, NaN rows where no face. ``template``, ``size``: see
    :func:`template_points`. ``smoothing``: the centred window (frames) of
    :func:`smooth_points` applied to the five points first (0 or 1: off). Frames without a
    face (or whose points are degenerate) get NaN affines.
    """
    target = template_points(template, size)
    points = smooth_points(five_points(landmarks), smoothing)
    affines = np.full((len(points), 2, 3), np.nan)
    for index, source in enumerate(points):
        affines[index] = similarity_affine(source, target)
    return affines


def _linear_and_shift(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(affine, np.float64)
    if matrix.shape[-2:] != (2, 3):
        raise ValueError(f"affines must be (..., 2, 3), not {matrix.shape}")
    return matrix[..., :2], matrix[..., 2]


def to_crop(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Frame points (..., K, 2) px -> crop points (..., K, 2) px by ``affine`` (..., 2, 3).

    Leading axes broadcast: landmarks (N, 68, 2) with affines (N, 2, 3) map each frame's
    points by its own affine. A NaN affine gives NaN points. float64.
    """
    linear, shift = _linear_and_shift(affine)
    points = np.asarray(points, np.float64)
    return np.einsum("...ij,...kj->...ki", linear, points) + shift[..., None, :]


def to_frame(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Crop points (..., K, 2) px -> frame points (..., K, 2) px: the inverse of
    :func:`to_crop` with the same ``affine`` (..., 2, 3). A NaN affine gives NaN points;
    a singular one raises ``numpy.linalg.LinAlgError``. float64."""
    linear, shift = _linear_and_shift(affine)
    finite = np.isfinite(linear).all(axis=(-2, -1))
    inverse = np.full(linear.shape, np.nan)
    inverse[finite] = np.linalg.inv(linear[finite])
    points = np.asarray(points, np.float64)
    return np.einsum("...ij,...kj->...ki", inverse, points - shift[..., None, :])


def _footprint(
    frame_shape: tuple[int, ...], affine: np.ndarray, size: int, margin: float
) -> tuple[int, int, int, int] | None:
    """The frame's pixels ``(x1, y1, x2, y2)`` (exclusive ends, within the frame) under a
    ``size`` crop by ``affine``, widened by ``margin`` px; None when they are none."""
    inverse = cv2.invertAffineTransform(affine)  # ~100x cheaper than to_frame for one
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], float) @ inverse[:, :2].T
    corners += inverse[:, 2]
    low = np.floor(corners.min(axis=0) - margin).astype(int)
    high = np.ceil(corners.max(axis=0) + margin).astype(int)
    height, width = frame_shape[:2]
    x1, y1 = max(low[0], 0), max(low[1], 0)
    x2, y2 = min(high[0], width), min(high[1], height)
    return (x1, y1, x2, y2) if x1 < x2 and y1 < y2 else None


def _pyramid_shrunk(
    frame_rgb: np.ndarray, affine: np.ndarray, region: tuple[int, int, int, int], scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """``region`` of the frame halved by ``cv2.pyrDown`` (Gaussian 5x5, then every other
    pixel) until the warp (of ``scale``) shrinks by 2x at most, and the affine from its
    pixels to the crop's. A halving maps continuous coordinates as ``x = 2 x' - 0.5`` (output pixel
    ``i`` is centred on input pixel ``2i``)."""
    x1, y1, x2, y2 = region
    shrunk = frame_rgb[y1:y2, x1:x2]
    to_frame_px = np.array([[1.0, 0, x1], [0, 1.0, y1], [0, 0, 1.0]])
    halve = np.array([[2.0, 0, -0.5], [0, 2.0, -0.5], [0, 0, 1.0]])
    while scale < PYRAMID_BELOW and min(shrunk.shape[:2]) > 1:
        shrunk = cv2.pyrDown(shrunk)
        to_frame_px = to_frame_px @ halve
        scale *= 2
    return shrunk, affine @ to_frame_px


def warp_aligned(
    frame_rgb: np.ndarray, affine: np.ndarray, size: int, interpolation: Interpolation = "cubic"
) -> np.ndarray:
    """The aligned crop uint8 (size, size, 3) of ``frame_rgb`` uint8 (H, W, 3) under
    ``affine`` (2, 3) (frame px -> crop px, as :func:`alignment_affines` gives); black
    where the crop reaches past the frame, all black for a NaN affine. Shrinking by more
    than 2x first halves the frame by a Gaussian pyramid (:data:`PYRAMID_BELOW`).
    ValueError for an unknown ``interpolation``."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}")
    matrix = np.asarray(affine, np.float64)
    if not np.isfinite(matrix).all():
        return np.zeros((size, size, 3), np.uint8)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < PYRAMID_BELOW:
        # The pyramid's and the warp's kernels reach ~2 px of each level: 4 / scale in all.
        footprint = _footprint(frame_rgb.shape, matrix, size, margin=4.0 / scale)
        if footprint is None:  # the crop lies wholly outside the frame
            return np.zeros((size, size, 3), np.uint8)
        frame_rgb, matrix = _pyramid_shrunk(frame_rgb, matrix, footprint, scale)
    # warpAffine works on pixel centres at integer coordinates (ours are at +0.5).
    centred = matrix.copy()
    centred[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(
        frame_rgb, centred, (size, size), flags=INTERPOLATIONS[interpolation],
        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )  # fmt: skip
