"""Drawing primitives for face overlays: boxes, landmark contours, axes, in OpenCV fixed point.

Coordinates are continuous pixels of the image drawn on (``x`` right, ``y`` down, pixel
``(x, y)`` covering ``[x, x+1) x [y, y+1)``); they are converted to OpenCV's fixed point
(:data:`SHIFT` fractional bits) so lines are anti-aliased with sub-pixel precision. Line
widths and dot sizes scale with the image (:class:`Style`). Everything draws in place on an
RGB uint8 (H, W, 3) C-contiguous image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Color = tuple[int, int, int]
"""An RGB colour, 0-255 per channel."""

AXIS_COLORS: tuple[Color, Color, Color] = ((255, 40, 40), (40, 220, 40), (60, 110, 255))
"""Head-pose x (red), y (green) and z (blue) axes."""
DETECTOR_LIGHTEN = 0.55
"""How far the detector box's colour is moved towards white (0: the crop box's colour)."""

LANDMARK_CONTOURS: tuple[tuple[str, tuple[int, ...], bool], ...] = (
    ("jaw", tuple(range(0, 17)), False),
    ("left brow", tuple(range(17, 22)), False),
    ("right brow", tuple(range(22, 27)), False),
    ("nose bridge", tuple(range(27, 31)), False),
    ("nostrils", (30, *range(31, 36)), True),
    ("left eye", tuple(range(36, 42)), True),
    ("right eye", tuple(range(42, 48)), True),
    ("outer lips", tuple(range(48, 60)), True),
    ("inner lips", tuple(range(60, 68)), True),
)
"""iBUG 68-point groups as (name, point indices, closed); "left" is the image-left side."""

SHIFT = 4  # OpenCV fixed-point drawing: coordinates carry 4 fractional bits
_ONE = 1 << SHIFT


@dataclass(frozen=True)
class Style:
    """Line ``thickness`` (px), landmark dot ``radius`` (px) and ``font_scale`` (OpenCV's
    Hershey scale) for an image of a given size: :meth:`for_frame`."""

    thickness: int  # px
    radius: float  # landmark dot radius, px
    font_scale: float

    @staticmethod
    def for_frame(width: int, height: int) -> Style:
        """The style of a ``width`` x ``height`` px image (thicker on larger images)."""
        side = min(width, height)
        return Style(
            thickness=max(1, round(side / 320)),
            radius=max(1.0, side / 256),
            font_scale=max(0.35, side / 900),
        )


def check_rgb(rgb: np.ndarray) -> None:
    """ValueError unless ``rgb`` is an RGB uint8 (H, W, 3) array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")


def to_fixed(points: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates (..., 2) (pixel k covers [k, k+1)) -> OpenCV fixed
    point int32 (..., 2) with :data:`SHIFT` fractional bits."""
    # OpenCV puts integer coordinates at pixel centres, hence the half-pixel offset.
    return np.round((np.asarray(points, np.float64) - 0.5) * _ONE).astype(np.int32)


def _segment(out: np.ndarray, start: np.ndarray, end: np.ndarray, color: Color, width: int) -> None:
    """An anti-aliased line from ``start`` (2,) to ``end`` (2,) px, ``width`` px thick."""
    a, b = (tuple(map(int, p)) for p in to_fixed(np.stack([start, end])))
    cv2.line(out, a, b, color, width, cv2.LINE_AA, SHIFT)


def lighter(color: Color, amount: float = DETECTOR_LIGHTEN) -> Color:
    """``color`` moved ``amount`` (0..1) of the way to white (the detector box's style)."""
    r, g, b = (round(c + (255 - c) * amount) for c in color)
    return (r, g, b)


def draw_box(out: np.ndarray, rect: np.ndarray, color: Color, style: Style) -> None:
    """A solid rectangle ``[x1, y1, x2, y2]`` (pixels of ``out``), ``style.thickness`` px."""
    corners = rect[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2)
    cv2.polylines(out, [to_fixed(corners)], True, color, style.thickness, cv2.LINE_AA, SHIFT)


def draw_dashed_box(out: np.ndarray, rect: np.ndarray, color: Color, style: Style) -> None:
    """A thin dashed rectangle ``[x1, y1, x2, y2]`` (pixels of ``out``): along each side from
    its first corner, dashes of ``dash`` px with gaps of the same length."""
    x1, y1, x2, y2 = (float(v) for v in rect)
    dash = max(4.0, 3.0 * style.thickness + 3)
    thickness = max(1, style.thickness // 2)
    dashes = []
    for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                       ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):  # fmt: skip
        a, b = np.asarray(start), np.asarray(end)
        length = float(np.hypot(*(b - a)))
        if not length:  # a side of a degenerate box: nothing
            continue
        offsets = np.arange(0.0, length, 2 * dash)
        ends = np.minimum(offsets + dash, length)
        dashes.append(np.stack([a + np.outer(offsets / length, b - a),
                                a + np.outer(ends / length, b - a)], axis=1))  # fmt: skip
    if dashes:
        # One call for every dash (a 2-point open polyline is drawn as cv2.line draws it):
        # a line call per dash cost 2-3 ms a frame, most of a preview's drawing time.
        cv2.polylines(out, list(to_fixed(np.concatenate(dashes))), False, color, thickness,
                      cv2.LINE_AA, SHIFT)  # fmt: skip


def draw_landmarks(out: np.ndarray, points: np.ndarray, color: Color, style: Style) -> None:
    """68 landmarks (68, 2) (pixels of ``out``; NaN rows skipped) as dots joined along
    :data:`LANDMARK_CONTOURS`, in lines thinner than the box."""
    line = max(1, (style.thickness + 1) // 2)  # thinner than the box: the dots stay visible
    for _, indices, closed in LANDMARK_CONTOURS:
        contour = points[list(indices)]
        if np.isfinite(contour).all():
            cv2.polylines(out, [to_fixed(contour)], closed, color, line, cv2.LINE_AA, SHIFT)
            continue
        # A NaN point breaks the contour: draw the segments between finite neighbours.
        ends = np.roll(contour, -1, axis=0) if closed else contour[1:]
        for start, end in zip(contour, ends, strict=False):
            if np.isfinite(start).all() and np.isfinite(end).all():
                _segment(out, start, end, color, line)
    radius = round(style.radius * _ONE)
    for x, y in to_fixed(points[np.isfinite(points).all(axis=1)]):
        cv2.circle(out, (int(x), int(y)), radius, color, -1, cv2.LINE_AA, SHIFT)


def draw_axes(out: np.ndarray, axes: np.ndarray, style: Style) -> None:
    """Arrows from ``axes[0]`` to ``axes[1:]`` ((4, 2) pixels of ``out``, as
    :func:`~dpl_assets.visualize.pose_axes.pose_axes_px` gives) in :data:`AXIS_COLORS`."""
    origin, *ends = (tuple(map(int, p)) for p in to_fixed(axes))
    # z last: it points at the viewer, so it is drawn on top.
    for end, color in zip(ends, AXIS_COLORS, strict=True):
        cv2.arrowedLine(
            out, origin, end, color, style.thickness + 1, cv2.LINE_AA, SHIFT, tipLength=0.15
        )
