"""Draw one frame's face annotations: boxes, 68 landmarks with their contours, head-pose
axes; :class:`Overlays` holds a clip's per-frame rows.

Inputs are the pipeline's per-frame rows, in pixels of the frame they were computed on
(``x`` right, ``y`` down, pixel ``(x, y)`` covering ``[x, x+1) x [y, y+1)``):

- ``box`` (4,) or (5,): ``[x1, y1, x2, y2(, score)]``, the crop box (a ``bboxes`` row: what
  the crops cut), drawn solid;
- ``detector_box`` (4,) or (5,): the face detector's box (a ``raw_bboxes`` row), drawn in
  a lighter style (thin, dashed, paler) so the two are told apart;
- ``landmarks`` (68, 2): iBUG 300-W order (jaw 0-16, brows 17-26, nose 27-35, eyes
  36-47, lips 48-67);
- ``head_pose`` (6,): ``[yaw, pitch, roll]`` degrees and ``[tx, ty, tz]``, the camera-frame
  translation in the generic face model's units (:mod:`dpl_assets.nodes.head_pose`);
- ``face_mask_code``: 0 no face, 1 detected, 2 gap filled (the ``face_mask`` datatype).

The head-pose axes (:mod:`~dpl_assets.visualize.pose_axes`: x red, y green, z blue) start
at the nose tip (landmark 30; else the box centre). NaN rows (no face) draw only a small
"no face" label; gap-filled frames are drawn in a different colour. The primitives
(anti-aliased, sub-pixel, thicker on larger frames) are in
:mod:`~dpl_assets.visualize.drawing`; labels and the rejected video's banner in
:mod:`~dpl_assets.visualize.labels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dpl_assets.visualize.drawing import (
    Color,
    Style,
    check_rgb,
    draw_axes,
    draw_box,
    draw_dashed_box,
    draw_landmarks,
    lighter,
)
from dpl_assets.visualize.labels import REJECTED_COLOR, banner, put_label, stamp_banner
from dpl_assets.visualize.pose_axes import pose_axes_px, project, rotation_matrix

__all__ = [
    "DETECTED",
    "DETECTED_COLOR",
    "GAP_FILLED",
    "GAP_FILLED_COLOR",
    "NOSE_TIP",
    "NO_FACE",
    "REJECTED_COLOR",
    "Overlays",
    "banner",
    "draw_overlay",
    "lighter",
    "pose_axes_px",
    "project",
    "put_label",
    "rotation_matrix",
    "stamp_banner",
]

NO_FACE, DETECTED, GAP_FILLED = 0, 1, 2
"""``face_mask`` codes (see the ``face_mask`` datatype)."""

DETECTED_COLOR: Color = (0, 230, 255)  # RGB cyan: stands out on skin and the axis colours
GAP_FILLED_COLOR: Color = (255, 0, 200)  # magenta: interpolated, not seen by the model
NOSE_TIP = 30


def _finite_box(box: np.ndarray | None) -> np.ndarray | None:
    """``[x1, y1, x2, y2]`` float64 of a (4,) or (5,) box, None when absent or not finite."""
    if box is None:
        return None
    values = np.asarray(box, dtype=np.float64)
    if values.shape not in ((4,), (5,)):
        raise ValueError(f"box must be (4,) or (5,) [x1, y1, x2, y2(, score)], not {values.shape}")
    return values[:4] if np.isfinite(values[:4]).all() else None


def _finite_landmarks(landmarks: np.ndarray | None) -> np.ndarray | None:
    """Landmarks (68, 2) float64, None when absent or all NaN."""
    if landmarks is None:
        return None
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), not {points.shape}")
    return points if np.isfinite(points).any() else None


def _anchor(points: np.ndarray | None, rect: np.ndarray | None) -> np.ndarray | None:
    """Where the axes start: the nose tip, else the box centre (source pixels)."""
    if points is not None and np.isfinite(points[NOSE_TIP]).all():
        return points[NOSE_TIP]
    if rect is not None:
        return (rect[:2] + rect[2:]) / 2
    return None


def draw_overlay(
    rgb: np.ndarray,
    *,
    box: np.ndarray | None = None,
    landmarks: np.ndarray | None = None,
    head_pose: np.ndarray | None = None,
    face_mask_code: int | None = None,
    source_size: tuple[int, int] | None = None,
    detector_box: np.ndarray | None = None,
) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) uint8 with the face annotations drawn on it.

    ``box`` (4,) or (5,) px (the crop box, solid), ``detector_box`` (the detector's box,
    thin, dashed and paler, under the crop box), ``landmarks`` (68, 2) px, ``head_pose``
    (6,) (see the module docstring); any may be None. ``source_size`` (width, height) is
    the size of the frame the coordinates refer to, when ``rgb`` is a resized copy (default:
    ``rgb``'s own).
    With mask code 0, or only NaN values, only a "no face" label is drawn; with nothing
    given at all, nothing is drawn. Mask code 2 (gap filled) draws in
    :data:`GAP_FILLED_COLOR` and labels the frame. ValueError for a frame that is not RGB
    uint8 or a row of the wrong shape.
    """
    check_rgb(rgb)
    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    height, width = out.shape[:2]
    source = source_size or (width, height)
    scale = np.array([width / source[0], height / source[1]])
    style = Style.for_frame(width, height)

    rect = _finite_box(box)
    detector = _finite_box(detector_box)
    points = _finite_landmarks(landmarks)
    pose = None if head_pose is None else np.asarray(head_pose, dtype=np.float64)
    has_pose = pose is not None and np.isfinite(pose[:3]).all()
    nothing = rect is None and detector is None and points is None and not has_pose
    if face_mask_code == NO_FACE or nothing:
        if any(v is not None for v in (box, detector_box, landmarks, head_pose, face_mask_code)):
            put_label(out, "no face", font_scale=style.font_scale)
        return out

    color = GAP_FILLED_COLOR if face_mask_code == GAP_FILLED else DETECTED_COLOR
    if detector is not None:
        draw_dashed_box(out, detector * np.tile(scale, 2), lighter(color), style)
    if rect is not None:
        draw_box(out, rect * np.tile(scale, 2), color, style)
    if points is not None:
        draw_landmarks(out, points * scale, color, style)
    if pose is not None and has_pose:
        anchor = _anchor(points, rect if rect is not None else detector)
        axes = pose_axes_px(pose, source, anchor=anchor)
        if axes is not None:
            draw_axes(out, axes * scale, style)
    if face_mask_code == GAP_FILLED:
        put_label(out, "gap filled", color=GAP_FILLED_COLOR, font_scale=style.font_scale)
    return out


@dataclass(frozen=True, eq=False)
class Overlays:
    """Per-frame annotations of one clip; each array has N rows, and any may be None.

    - ``boxes`` (N, 4) or (N, 5) px: the crop boxes (``bboxes``), drawn solid;
    - ``detector_boxes`` (N, 4) or (N, 5) px: the detector's (``raw_bboxes``), lighter;
    - ``landmarks`` (N, 68, 2) px;
    - ``head_pose`` (N, 6) ``[yaw, pitch, roll]`` degrees + translation;
    - ``face_mask`` (N,) codes 0 / 1 / 2.

    ValueError when an array has another shape or the arrays disagree on N.
    """

    boxes: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    head_pose: np.ndarray | None = None
    face_mask: np.ndarray | None = None
    detector_boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        shapes = {
            "boxes": ((4, 5), 2),
            "detector_boxes": ((4, 5), 2),
            "landmarks": ((68,), 3),
            "head_pose": ((6,), 2),
            "face_mask": ((), 1),
        }
        counts = set()
        for name, (second_axis, ndim) in shapes.items():
            array = getattr(self, name)
            if array is None:
                continue
            shape = np.shape(array)
            if len(shape) != ndim or (second_axis and shape[1] not in second_axis):
                raise ValueError(f"overlay {name} has shape {shape}; see Overlays for shapes")
            if name == "landmarks" and shape[2] != 2:
                raise ValueError(f"overlay landmarks has shape {shape}, not (N, 68, 2)")
            counts.add(shape[0])
        if len(counts) > 1:
            raise ValueError(f"overlay arrays disagree on the frame count: {sorted(counts)}")

    @property
    def frame_count(self) -> int | None:
        """N, or None when no array is given."""
        arrays = (self.boxes, self.detector_boxes, self.landmarks, self.head_pose, self.face_mask)
        for array in arrays:
            if array is not None:
                return int(np.shape(array)[0])
        return None

    def draw(
        self, index: int, rgb: np.ndarray, *, source_size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Frame ``index``'s annotations on a copy of ``rgb`` (see :func:`draw_overlay`).

        IndexError for an ``index`` outside the N frames.
        """
        count = self.frame_count
        if count is not None and not 0 <= index < count:
            raise IndexError(f"frame {index} has no overlay: the overlays cover {count} frames")

        def row(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else np.asarray(array[index])

        mask = None if self.face_mask is None else int(self.face_mask[index])
        return draw_overlay(
            rgb,
            box=row(self.boxes),
            landmarks=row(self.landmarks),
            head_pose=row(self.head_pose),
            face_mask_code=mask,
            source_size=source_size,
            detector_box=row(self.detector_boxes),
        )
