"""Draw one frame's face annotations: boxes, 68 landmarks with their contours, head-pose
axes; and the red banner that marks a rejected video.

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

Head-pose axes follow :mod:`dpl_assets.nodes.head_pose` exactly: a pinhole camera with focal
length = frame width and principal point = frame centre, and the rotation
``R = Rx(pitch) @ Ry(yaw) @ Rz(-roll)`` (intrinsic X-Y-Z; roll is stored negated because the
image's y points down) taking the model frame (the generic face with y and z flipped: x
right, y down, z into the head) to the camera frame. :func:`rotation_matrix` is the inverse
of head_pose's matrix-to-angles conversion. The axes drawn are the generic face's own:
x (red) towards the image-right of a frontal face, y (green) up, z (blue) out of the face
towards the camera, starting at the nose tip (landmark 30; else the box centre).

NaN rows (no face) draw only a small "no face" label; gap-filled frames are drawn in a
different colour. Lines are anti-aliased with sub-pixel precision and get thicker on
larger frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NO_FACE, DETECTED, GAP_FILLED = 0, 1, 2
"""``face_mask`` codes (see the ``face_mask`` datatype)."""

Color = tuple[int, int, int]
DETECTED_COLOR: Color = (0, 230, 255)  # RGB cyan: stands out on skin and the axis colours
GAP_FILLED_COLOR: Color = (255, 0, 200)  # magenta: interpolated, not seen by the model
AXIS_COLORS: tuple[Color, Color, Color] = ((255, 40, 40), (40, 220, 40), (60, 110, 255))
LABEL_COLOR: Color = (255, 255, 255)
REJECTED_COLOR: Color = (200, 16, 16)  # the banner of a rejected video
DETECTOR_LIGHTEN = 0.55
"""How far the detector box's colour is moved towards white (0: the crop box's colour)."""

AXIS_LENGTH_MODEL = 200.0
"""Length of the drawn axes in generic-model units (the outer eye corners are 450 apart)."""

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

NOSE_TIP = 30
_SHIFT = 4  # OpenCV fixed-point drawing: coordinates carry 4 fractional bits
_ONE = 1 << _SHIFT


# --------------------------------------------------------------------------------------
# Head-pose geometry
# --------------------------------------------------------------------------------------


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) rotation for ``head_pose``'s angles (degrees): the inverse of its conversion.

    ``head_pose`` stores ``[yaw, pitch, -roll_z]`` for a matrix whose intrinsic X-Y-Z Euler
    angles are ``(pitch, yaw, roll_z)``, so this returns ``Rx(pitch) @ Ry(yaw) @ Rz(-roll)``.
    """
    a, b, c = np.radians([pitch, yaw, -roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def camera_matrix(frame_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) intrinsics of ``head_pose``: focal = width px, principal point = centre."""
    width, height = frame_size
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)


def project(points_camera: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Camera-frame points (K, 3) -> pixels (K, 2) with :func:`camera_matrix`."""
    homogeneous = points_camera @ camera_matrix(frame_size).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


# Axis end points in head_pose's model frame (y down, z into the head) for the generic
# face's x right, y up, z towards the camera.
_AXIS_DIRECTIONS = np.array([[0.0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, -1]])


def pose_axes_px(
    head_pose: np.ndarray,
    frame_size: tuple[int, int],
    *,
    anchor: np.ndarray | None = None,
    length: float = AXIS_LENGTH_MODEL,
) -> np.ndarray | None:
    """Head-pose axes in pixels: (4, 2) ``[origin, x end, y end, z end]``, or None.

    ``head_pose`` (6,) ``[yaw, pitch, roll, tx, ty, tz]``; ``frame_size`` (width, height) of
    the frame the pose was computed on. The model's origin (nose tip) and axis ends
    (``length`` model units) are rotated and translated by the pose and projected with the
    head-pose camera; with ``anchor`` (2,) px the drawing is shifted so that the origin
    lands there (the nose-tip landmark: the fit's small residual is not drawn). Without a
    usable translation (NaN, or not in front of the camera) the axes are drawn as an
    orthographic projection of the rotation, 10% of the frame width long, from ``anchor``.
    None when the angles are NaN, or neither translation nor anchor is usable.
    """
    pose = np.asarray(head_pose, dtype=np.float64)
    if pose.shape != (6,):
        raise ValueError(f"head_pose must be (6,) [yaw, pitch, roll, tx, ty, tz], not {pose.shape}")
    if not np.isfinite(pose[:3]).all():
        return None
    rotation = rotation_matrix(*pose[:3])
    translation = pose[3:]
    ends_camera = length * _AXIS_DIRECTIONS @ rotation.T + translation
    if np.isfinite(translation).all() and (ends_camera[:, 2] > 1e-6 * length).all():
        pixels = project(ends_camera, frame_size)
        if anchor is not None and np.isfinite(anchor).all():
            pixels += np.asarray(anchor, np.float64) - pixels[0]
        return pixels
    if anchor is None or not np.isfinite(anchor).all():
        return None
    # Orthographic: the camera-frame x, y of each rotated direction (image x right, y down).
    length_px = 0.1 * frame_size[0]
    return np.asarray(anchor, np.float64) + length_px * (_AXIS_DIRECTIONS @ rotation.T)[:, :2]


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    thickness: int  # px
    radius: float  # landmark dot radius, px
    font_scale: float

    @staticmethod
    def for_frame(width: int, height: int) -> _Style:
        side = min(width, height)
        return _Style(
            thickness=max(1, round(side / 320)),
            radius=max(1.0, side / 256),
            font_scale=max(0.35, side / 900),
        )


def _fixed(points: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinates (pixel k covers [k, k+1)) -> OpenCV fixed point."""
    # OpenCV puts integer coordinates at pixel centres, hence the half-pixel offset.
    return np.round((np.asarray(points, np.float64) - 0.5) * _ONE).astype(np.int32)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")


def put_label(
    image: np.ndarray,
    text: str,
    *,
    corner: str = "top-left",
    color: Color = LABEL_COLOR,
    font_scale: float | None = None,
) -> None:
    """Write ``text`` in place in a ``corner`` ("top-left" | "bottom-left") of RGB ``image``.

    White-on-black outline so it reads on any background; size scaled to the image.
    """
    height, width = image.shape[:2]
    scale = font_scale if font_scale is not None else _Style.for_frame(width, height).font_scale
    thickness = max(1, round(scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(2, text_h // 3)
    if corner == "top-left":
        origin = (margin, margin + text_h)
    elif corner == "bottom-left":
        origin = (margin, height - margin - baseline)
    else:
        raise ValueError(f"corner must be 'top-left' or 'bottom-left', not {corner!r}")
    for ink, weight in (((0, 0, 0), thickness + 2), (color, thickness)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, ink, weight, cv2.LINE_AA)


def banner(
    width: int,
    text: str,
    *,
    color: Color = REJECTED_COLOR,
    font_scale: float | None = None,
    max_lines: int = 4,
) -> np.ndarray:
    """An RGB uint8 band ``width`` px wide, filled with ``color``, with ``text`` in white
    wrapped onto at most ``max_lines`` lines (the last one cut with "..." if needed).

    The font scales with the width (readable on a 320 px preview and a 1024 px sheet); the
    band is as tall as its lines. Used to mark the frames of a rejected video.
    """
    if width <= 0:
        raise ValueError(f"banner width must be positive, not {width}")
    scale = font_scale if font_scale is not None else min(0.9, max(0.4, width / 800))
    thickness = 1 if scale < 0.6 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, thickness)
    margin = max(3, text_h // 2)
    lines = _wrap(text, width - 2 * margin, scale, thickness, max_lines)
    line_h = text_h + baseline + max(2, text_h // 3)
    band = np.empty((2 * margin + len(lines) * line_h, width, 3), np.uint8)
    band[:] = color
    for number, line in enumerate(lines):
        origin = (margin, margin + number * line_h + text_h)
        cv2.putText(band, line, origin, font, scale, LABEL_COLOR, thickness, cv2.LINE_AA)
    return band


def _wrap(text: str, width: int, scale: float, thickness: int, max_lines: int) -> list[str]:
    """``text`` split at spaces (or inside a word too long for a line) into lines that fit
    ``width`` px; at most ``max_lines``, the last ending in "..." when text was left out."""

    def fits(line: str) -> bool:
        size = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
        return bool(size <= width)

    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while not fits(current) and len(current) > 1:  # a word wider than the line
            cut = len(current) - 1
            while cut > 1 and not fits(current[:cut]):
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "..."):
            last = last[:-1]
        lines = [*lines[: max_lines - 1], last + "..."]
    return lines or [""]


def stamp_banner(rgb: np.ndarray, band: np.ndarray, *, where: str = "bottom") -> np.ndarray:
    """A copy of ``rgb`` with ``band`` (from :func:`banner`, as wide as ``rgb``) pasted over
    its top or bottom rows (cut to the frame's height)."""
    _check_rgb(rgb)
    if band.shape[1] != rgb.shape[1]:
        raise ValueError(f"banner width {band.shape[1]} is not the frame's {rgb.shape[1]}")
    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    rows = min(band.shape[0], out.shape[0])
    if where == "bottom":
        out[out.shape[0] - rows :] = band[:rows]
    elif where == "top":
        out[:rows] = band[:rows]
    else:
        raise ValueError(f"where must be 'top' or 'bottom', not {where!r}")
    return out


def _finite_box(box: np.ndarray | None) -> np.ndarray | None:
    if box is None:
        return None
    values = np.asarray(box, dtype=np.float64)
    if values.shape not in ((4,), (5,)):
        raise ValueError(f"box must be (4,) or (5,) [x1, y1, x2, y2(, score)], not {values.shape}")
    return values[:4] if np.isfinite(values[:4]).all() else None


def _finite_landmarks(landmarks: np.ndarray | None) -> np.ndarray | None:
    if landmarks is None:
        return None
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), not {points.shape}")
    return points if np.isfinite(points).any() else None


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
    :data:`GAP_FILLED_COLOR` and labels the frame.
    """
    _check_rgb(rgb)
    out = np.array(rgb, dtype=np.uint8, copy=True, order="C")
    height, width = out.shape[:2]
    source = source_size or (width, height)
    scale = np.array([width / source[0], height / source[1]])
    style = _Style.for_frame(width, height)

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
        _draw_dashed_box(out, detector * np.tile(scale, 2), lighter(color), style)
    if rect is not None:
        corners = rect[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2) * scale
        cv2.polylines(out, [_fixed(corners)], True, color, style.thickness, cv2.LINE_AA, _SHIFT)
    if points is not None:
        _draw_landmarks(out, points * scale, color, style)
    if pose is not None and has_pose:
        anchor = _anchor(points, rect if rect is not None else detector)
        axes = pose_axes_px(pose, source, anchor=anchor)
        if axes is not None:
            _draw_axes(out, axes * scale, style)
    if face_mask_code == GAP_FILLED:
        put_label(out, "gap filled", color=GAP_FILLED_COLOR, font_scale=style.font_scale)
    return out


def lighter(color: Color, amount: float = DETECTOR_LIGHTEN) -> Color:
    """``color`` moved ``amount`` of the way to white (the detector box's style)."""
    r, g, b = (round(c + (255 - c) * amount) for c in color)
    return (r, g, b)


def _draw_dashed_box(out: np.ndarray, rect: np.ndarray, color: Color, style: _Style) -> None:
    """A thin dashed rectangle ``[x1, y1, x2, y2]`` (pixels of ``out``)."""
    x1, y1, x2, y2 = (float(v) for v in rect)
    dash = max(4.0, 3.0 * style.thickness + 3)
    thickness = max(1, style.thickness // 2)
    for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                       ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):  # fmt: skip
        a, b = np.asarray(start), np.asarray(end)
        length = float(np.hypot(*(b - a)))
        for offset in np.arange(0.0, length, 2 * dash):
            s = a + (b - a) * (offset / length) if length else a
            e = a + (b - a) * (min(offset + dash, length) / length) if length else a
            p, q = (tuple(map(int, v)) for v in _fixed(np.stack([s, e])))
            cv2.line(out, p, q, color, thickness, cv2.LINE_AA, _SHIFT)


def _anchor(points: np.ndarray | None, rect: np.ndarray | None) -> np.ndarray | None:
    """Where the axes start: the nose tip, else the box centre (source pixels)."""
    if points is not None and np.isfinite(points[NOSE_TIP]).all():
        return points[NOSE_TIP]
    if rect is not None:
        return (rect[:2] + rect[2:]) / 2
    return None


def _draw_landmarks(out: np.ndarray, points: np.ndarray, color: Color, style: _Style) -> None:
    line = max(1, (style.thickness + 1) // 2)  # thinner than the box: the dots stay visible
    for _, indices, closed in LANDMARK_CONTOURS:
        contour = points[list(indices)]
        if np.isfinite(contour).all():
            cv2.polylines(out, [_fixed(contour)], closed, color, line, cv2.LINE_AA, _SHIFT)
            continue
        # A NaN point breaks the contour: draw the segments between finite neighbours.
        ends = np.roll(contour, -1, axis=0) if closed else contour[1:]
        for start, end in zip(contour, ends, strict=False):
            if np.isfinite(start).all() and np.isfinite(end).all():
                a, b = (tuple(map(int, p)) for p in _fixed(np.stack([start, end])))
                cv2.line(out, a, b, color, line, cv2.LINE_AA, _SHIFT)
    radius = round(style.radius * _ONE)
    for x, y in _fixed(points[np.isfinite(points).all(axis=1)]):
        cv2.circle(out, (int(x), int(y)), radius, color, -1, cv2.LINE_AA, _SHIFT)


def _draw_axes(out: np.ndarray, axes: np.ndarray, style: _Style) -> None:
    origin, *ends = (tuple(map(int, p)) for p in _fixed(axes))
    # z last: it points at the viewer, so it is drawn on top.
    for end, color in zip(ends, AXIS_COLORS, strict=True):
        cv2.arrowedLine(
            out, origin, end, color, style.thickness + 1, cv2.LINE_AA, _SHIFT, tipLength=0.15
        )


# --------------------------------------------------------------------------------------
# A clip's overlays
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Overlays:
    """Per-frame annotations of one clip; each array has N rows, and any may be None.

    - ``boxes`` (N, 4) or (N, 5) px: the crop boxes (``bboxes``), drawn solid;
    - ``detector_boxes`` (N, 4) or (N, 5) px: the detector's (``raw_bboxes``), lighter;
    - ``landmarks`` (N, 68, 2) px;
    - ``head_pose`` (N, 6) ``[yaw, pitch, roll]`` degrees + translation;
    - ``face_mask`` (N,) codes 0 / 1 / 2.
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
        """Frame ``index``'s annotations on a copy of ``rgb`` (see :func:`draw_overlay`)."""
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
