"""Faces family: RGB frames -> one tracked face per frame: box, 68 landmarks, 478-point mesh.

The tracking (:func:`track_faces`) and the given-box path (:func:`landmarks_in_boxes`) work
with any :class:`FaceModel`; :class:`FaceAnalyzer` is the default one, and the optional
``face-alignment`` backend is :class:`dpl_assets.nodes.fan_faces.FanFaceModel`.

The default runs offline on the models bundled in the ``mediapipe`` wheel (legacy
``solutions`` API; the Tasks API's FaceLandmarker needs a downloaded ``.task`` file):

1. **Detection** of *every* face in each frame: BlazeFace full range
   (``FaceDetection(model_selection=1)``), boxes kept when their score is at least
   ``filter_threshold``; the :data:`MAX_FACES_PER_FRAME` largest are used.
2. **Landmarks** for each of those faces: a square crop of :data:`MESH_CROP_SCALE` x the box
   (padded with black where it leaves the frame) goes through the static 478-point
   ``FaceMesh`` (``refine_landmarks``: iris points included), and the points are mapped back
   to frame pixels. The detector sees the whole frame at 192 px, so a mesh run on the full
   frame is ~12 px off for small faces; on the crop it is not.
3. **Tracking**: detections are linked frame to frame into tracks, greedily by IoU (the
   best-overlapping pairs first): at least :data:`TRACK_IOU` with a track's last box when
   the track was seen within the last :data:`TRACK_MAX_SKIP_FRAMES` frames, at least
   :data:`TRACK_RESUME_IOU` after a longer absence (the speaker looked away and came back to
   the same place). A detection that matches no track starts a new one.
4. **Identity**: after the pass, the one track with the largest sum over its frames of box
   area (pixels²) is followed: the face that is both large and persistent, so a big face
   seen for a moment and a small face in the background lose to the speaker.

Because the choice needs the whole pass and the frames come as a one-shot stream, the mesh is
run for every tracked face (at most :data:`MAX_FACES_PER_FRAME` per frame) and kept per
track; only the chosen track's is returned. Memory: 478 x 3 float32 (5.7 kB) per face and
frame, i.e. the size of the output times the number of faces on screen.

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)`` (mediapipe's relative coordinates times the frame size). Boxes are the
detector's and may reach past the frame. Mesh ``z`` is mediapipe's relative depth scaled
like ``x`` (pixels; smaller is nearer the camera, origin near the head's centre).

Landmark sanity: a landmark model run on an upside-down face (or on no face) returns
points without any error, so each face's 68 points must agree with the detection: the
eyes-to-mouth direction within :data:`MAX_AXIS_DISAGREEMENT_DEG` of the detector
keypoints' (when the detector gives keypoints), the roll (that direction against the
image's down) within +-:data:`MAX_ROLL_DEG`, and the eye/mouth centre inside the box.
A face failing this (or for which the model finds no landmarks) still counts for
tracking, but its frame has no face in the result (``implausible_frames`` in ``info``).

The 478 -> 68 mapping (:data:`MEDIAPIPE_TO_68`, iBUG 300-W order, the image-left side first
for every symmetric group) is bytedance/LatentSync's ``landmark_points_68``
(``latentsync/utils/image_processor.py``) with 0->127, 1->93, 2->132, 14->361, 15->323,
16->356 (jaw) and 17->70, 26->300 (outer brow ends) changed after comparing with dlib's
68-point predictor on a real face.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import cv2
import numpy as np

from dpl_assets.nodes import native_logs
from dpl_assets.outcomes import InputRejected

# fmt: off
MEDIAPIPE_TO_68: tuple[int, ...] = (
    127, 93, 132, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 361, 323, 356,  # jaw
    70, 63, 105, 66, 107,  # image-left brow (0-based 17-21)
    336, 296, 334, 293, 300,  # image-right brow (22-26)
    168, 197, 5, 4,  # nose bridge (27-30)
    75, 97, 2, 326, 305,  # nostrils (31-35)
    33, 160, 158, 133, 153, 144,  # image-left eye (36-41)
    362, 385, 387, 263, 373, 380,  # image-right eye (42-47)
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lips (48-59)
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips (60-67)
)
"""Mesh index of each of the 68 iBUG points (see the module docstring for the source)."""
# fmt: on

MESH_POINTS = 478
EYES_68 = slice(36, 48)
MOUTH_68 = slice(48, 68)

DEFAULT_FILTER_THRESHOLD = 0.5
"""Minimum detection score. The original's example graph used 0.9 with its own detector;
BlazeFace scores real frontal faces 0.7-0.95 and small or turned ones lower, and it gives
no false positives on flat, synthetic or noise frames even at 0, so 0.5 keeps hard faces
without letting clutter in (tracking and ``min_track_frames`` filter the rest)."""

MAX_FACES_PER_FRAME = 4  # the largest detections per frame that get tracked and meshed
TRACK_IOU = 0.3
TRACK_MAX_SKIP_FRAMES = 5
TRACK_RESUME_IOU = 0.5
MESH_CROP_SCALE = 2.2
MESH_CROP_MAX_SIDE = 512  # larger crops are downscaled first: the mesh model sees 256 px
MAX_AXIS_DISAGREEMENT_DEG = 60.0
MAX_ROLL_DEG = 100.0


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass
class FaceTrackResult:
    """The followed face in each of N frames (pixels of the frames; NaN where no face).

    - ``raw_bboxes`` float32 (N, 5): detector box ``[x1, y1, x2, y2, score]``.
    - ``landmarks`` float32 (N, 68, 2): iBUG 68 points ``(x, y)``.
    - ``landmarks_mesh`` float32 (N, 478, 3): mediapipe mesh ``(x, y, z)``, z in px units.
    - ``detected`` bool (N,): the face was found (and passed the sanity check) in the frame.
    - ``valid`` bool (N,): detected, or filled in by :func:`fill_gaps`.
    - ``info``: JSON-able record (frames, frames_with_face, coverage, tracks_seen,
      max_faces_in_a_frame, chosen_track, filled_frames, filter_threshold).
    """

    raw_bboxes: np.ndarray
    landmarks: np.ndarray
    landmarks_mesh: np.ndarray
    detected: np.ndarray
    valid: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.detected.shape[0])


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """Mesh points (..., 478, C) -> the 68 iBUG points (..., 68, 2) (x, y only)."""
    return mesh[..., MEDIAPIPE_TO_68, :2]


@dataclass(frozen=True)
class FaceLandmarks:
    """Landmarks of one face in one frame: ``points`` float32 (68, 2) px (iBUG order) and,
    from models that have it, the dense ``mesh`` float32 (478, 3) px (else None)."""

    points: np.ndarray
    mesh: np.ndarray | None = None


class FaceModel(Protocol):
    """A face detector + landmark model, run one frame at a time (see :func:`track_faces`).

    Implemented by :class:`FaceAnalyzer` (mediapipe, offline) and
    :class:`dpl_assets.nodes.fan_faces.FanFaceModel` (the ``face-alignment`` package).
    """

    name: str
    filter_threshold: float

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Faces in an RGB uint8 (H, W, 3) frame, largest first: ``(box (5,), keypoints)``."""
        ...

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the face in ``box`` ``[x1, y1, x2, y2, ...]`` px, or None."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes ``[x1, y1, x2, y2, ...]`` (pixels)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _square_crop(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` window at ``(x0, y0)`` of ``rgb``, black where outside."""
    height, width = rgb.shape[:2]
    inner = rgb[max(y0, 0) : min(y0 + side, height), max(x0, 0) : min(x0 + side, width)]
    if inner.shape[:2] == (side, side):
        return np.ascontiguousarray(inner)
    crop = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = max(-y0, 0), max(-x0, 0)
    crop[top : top + inner.shape[0], left : left + inner.shape[1]] = inner
    return crop


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Unsigned angle between two 2-D vectors, degrees."""
    cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def plausible_landmarks(
    points: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None = None
) -> bool:
    """Whether 68 landmarks (68, 2) px agree with their face box (>=4,) and keypoints.

    Keypoints (6, 2), when the detector gives them, are its image-left eye, image-right eye,
    nose tip, mouth centre and two ear tragions. True when the landmarks' eyes-to-mouth
    direction is within :data:`MAX_AXIS_DISAGREEMENT_DEG` of the keypoints' (skipped
    without keypoints), the roll (that direction against the image's down) is within
    +-:data:`MAX_ROLL_DEG`, and the eye/mouth centre lies inside the box.
    """
    eyes = points[EYES_68].mean(axis=0)
    mouth = points[MOUTH_68].mean(axis=0)
    axis = mouth - eyes
    if not np.isfinite(axis).all() or np.linalg.norm(axis) < 1e-3:
        return False
    if keypoints is not None:
        detector_axis = keypoints[3] - keypoints[:2].mean(axis=0)
        if _angle_deg(axis, detector_axis) > MAX_AXIS_DISAGREEMENT_DEG:
            return False
    if _angle_deg(axis, np.array([0.0, 1.0])) > MAX_ROLL_DEG:
        return False
    centre = (eyes + mouth) / 2
    return bool(box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3])


# --------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------


@dataclass
class _Face:
    """One face in one frame: box (5,) px + score, detector keypoints (6, 2) px or None,
    and the landmarks found in the box (None until run, or when the model found none)."""

    box: np.ndarray
    keypoints: np.ndarray | None
    landmarks: FaceLandmarks | None = None


@dataclass
class _Track:
    faces: dict[int, _Face] = field(default_factory=dict)  # frame index -> face
    last_frame: int = -1
    area_sum: float = 0.0

    @property
    def last_box(self) -> np.ndarray:
        return self.faces[self.last_frame].box

    def add(self, frame: int, face: _Face) -> None:
        self.faces[frame] = face
        self.last_frame = frame
        self.area_sum += float((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))


def _link(tracks: list[_Track], frame: int, faces: list[_Face]) -> None:
    """Append this frame's faces to ``tracks``: greedy best-IoU matching, then new tracks."""
    pairs = []
    for t, track in enumerate(tracks):
        skipped = frame - track.last_frame - 1
        needed = TRACK_IOU if skipped <= TRACK_MAX_SKIP_FRAMES else TRACK_RESUME_IOU
        for f, face in enumerate(faces):
            iou = box_iou(track.last_box, face.box)
            if iou >= needed:
                pairs.append((iou, track.last_frame, t, f))
    used_tracks: set[int] = set()
    used_faces: set[int] = set()
    for _, _, t, f in sorted(pairs, reverse=True):  # best overlap first, then most recent
        if t in used_tracks or f in used_faces:
            continue
        tracks[t].add(frame, faces[f])
        used_tracks.add(t)
        used_faces.add(f)
    for f, face in enumerate(faces):
        if f not in used_faces:
            track = _Track()
            track.add(frame, face)
            tracks.append(track)


# --------------------------------------------------------------------------------------
# Analyzer
# --------------------------------------------------------------------------------------


class FaceAnalyzer:
    """The offline face model: mediapipe's detector and 478-point mesh (CPU).

    ``with FaceAnalyzer(filter_threshold=0.5) as analyzer: result = analyzer.analyze(frames)``

    The mediapipe graphs are created on first use and freed by :meth:`close`. One analyzer
    uses about one core; it is not thread-safe (use one per thread), and a process must not
    fork after using it.
    """

    name = "mediapipe"

    def __init__(self, filter_threshold: float = DEFAULT_FILTER_THRESHOLD):
        self.filter_threshold = check_threshold(filter_threshold)
        self._detector: Any = None
        self._mesh: Any = None
        self._quiet = False

    # -- mediapipe objects ---------------------------------------------------------------

    def _models(self) -> tuple[Any, Any]:
        if self._detector is None or self._mesh is None:
            import mediapipe as mp

            if not self._quiet:  # mediapipe's C++ start-up lines: see native_logs
                native_logs.acquire()
                self._quiet = True
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self.filter_threshold
            )
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True
            )
        return self._detector, self._mesh

    def close(self) -> None:
        """Free the mediapipe graphs (a later call creates them again)."""
        try:
            for model in (self._detector, self._mesh):
                if model is not None:
                    model.close()
        finally:
            self._detector = self._mesh = None
            if self._quiet:
                self._quiet = False
                native_logs.release()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- per frame -----------------------------------------------------------------------

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """All faces in one RGB uint8 (H, W, 3) frame, largest first.

        Returns ``(box, keypoints)`` pairs: box float32 (5,) ``[x1, y1, x2, y2, score]`` px,
        keypoints float32 (6, 2) px (image-left eye, image-right eye, nose tip, mouth
        centre, image-left ear, image-right ear).
        """
        rgb = as_rgb(rgb)
        height, width = rgb.shape[:2]
        detector, _ = self._models()
        found = detector.process(rgb).detections or []
        faces: list[tuple[np.ndarray, np.ndarray | None]] = []
        for detection in found:
            score = float(detection.score[0])
            if score < self.filter_threshold:
                continue
            rel = detection.location_data.relative_bounding_box
            x1, y1 = rel.xmin * width, rel.ymin * height
            box = [x1, y1, x1 + rel.width * width, y1 + rel.height * height, score]
            keypoints = [
                (k.x * width, k.y * height) for k in detection.location_data.relative_keypoints
            ]
            faces.append((np.array(box, np.float32), np.array(keypoints, np.float32)))
        return largest_first(faces)

    def mesh(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The 478-point mesh float32 (478, 3) px of the face in ``box``, or None if not found.

        Runs on a square crop of :data:`MESH_CROP_SCALE` x the box's longer side around its
        centre; ``z`` is scaled like ``x``.
        """
        rgb = as_rgb(rgb)
        _, mesh_model = self._models()
        longer = float(max(box[2] - box[0], box[3] - box[1]))
        side = max(round(MESH_CROP_SCALE * longer), 8)
        x0 = round(float(box[0] + box[2]) / 2 - side / 2)
        y0 = round(float(box[1] + box[3]) / 2 - side / 2)
        crop = _square_crop(rgb, x0, y0, side)
        scale = 1.0
        if side > MESH_CROP_MAX_SIDE:
            scale = MESH_CROP_MAX_SIDE / side
            crop = cv2.resize(crop, (MESH_CROP_MAX_SIDE,) * 2, interpolation=cv2.INTER_AREA)
        found = mesh_model.process(crop).multi_face_landmarks
        if not found:
            return None
        size = crop.shape[0]
        points = np.array([(p.x, p.y, p.z) for p in found[0].landmark], np.float64) * size
        points /= scale
        points[:, 0] += x0
        points[:, 1] += y0
        return points.astype(np.float32)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """The mesh of the face in ``box`` and its 68 points, or None."""
        mesh = self.mesh(rgb, box)
        return None if mesh is None else FaceLandmarks(mesh_to_68(mesh).copy(), mesh)

    # -- a clip --------------------------------------------------------------------------

    def analyze(self, frames: Iterable[np.ndarray]) -> FaceTrackResult:
        """:func:`track_faces` with this model."""
        return track_faces(self, frames)


def check_threshold(filter_threshold: float) -> float:
    if not 0.0 <= filter_threshold <= 1.0:
        raise ValueError(f"filter_threshold must be in [0, 1], not {filter_threshold}")
    return filter_threshold


def largest_first(
    faces: list[tuple[np.ndarray, np.ndarray | None]],
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Detections sorted by box area, largest first."""
    return sorted(faces, key=lambda f: -float((f[0][2] - f[0][0]) * (f[0][3] - f[0][1])))


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous RGB uint8 (H, W, 3) array; ValueError for anything else."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


def track_faces(model: FaceModel, frames: Iterable[np.ndarray]) -> FaceTrackResult:
    """Follow the main face through ``frames`` (RGB uint8 (H, W, 3)), one pass, streamed.

    Every face is detected, landmarked and tracked; the track with the largest summed box
    area is returned (see the module docstring). ``valid`` equals ``detected`` here:
    :func:`fill_gaps` fills short gaps afterwards.
    """
    tracks: list[_Track] = []
    count = 0
    max_faces = 0
    for index, frame in enumerate(frames):
        rgb = as_rgb(frame)
        detections = model.detect(rgb)
        max_faces = max(max_faces, len(detections))
        faces = [_Face(box, keypoints) for box, keypoints in detections[:MAX_FACES_PER_FRAME]]
        for face in faces:
            face.landmarks = model.landmarks(rgb, face.box)
        _link(tracks, index, faces)
        count = index + 1
    track = max(tracks, key=lambda t: t.area_sum) if tracks else None
    result = _assemble(track, count, model)
    result.info.update(tracks_seen=len(tracks), max_faces_in_a_frame=max_faces)
    return result


def landmarks_in_boxes(
    model: FaceModel, frames: Iterable[np.ndarray], boxes: np.ndarray
) -> FaceTrackResult:
    """Landmarks of the face in given boxes (N, 4|5) px, one row per frame, NaN = no face.

    No detection and no tracking: the boxes say where the followed face is (the original's
    ``FaceLandmarksNode``). A box without a score gets score 1. Raises
    :class:`InputRejected` when the number of boxes is not the number of frames.
    """
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise InputRejected(f"given boxes must be (N, 4) or (N, 5), not {boxes.shape}")
    if boxes.shape[1] == 4:
        boxes = np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)
    track = _Track()
    count = 0
    for index, frame in enumerate(frames):
        count = index + 1
        if index >= len(boxes):
            continue  # only counted, for the message below
        rgb = as_rgb(frame)
        if np.isfinite(boxes[index, :4]).all():
            face = _Face(boxes[index], None)
            face.landmarks = model.landmarks(rgb, face.box)
            track.add(index, face)
    if count != len(boxes):
        raise InputRejected(f"given boxes cover {len(boxes)} frames, the video has {count}")
    result = _assemble(track if track.faces else None, count, model)
    result.info.update(tracks_seen=None, max_faces_in_a_frame=None, bboxes="given")
    return result


def _assemble(track: _Track | None, count: int, model: FaceModel) -> FaceTrackResult:
    """The followed track's faces as frame-indexed arrays, with the ``info`` record."""
    raw_bboxes = np.full((count, 5), np.nan, np.float32)
    landmarks = np.full((count, 68, 2), np.nan, np.float32)
    mesh = np.full((count, MESH_POINTS, 3), np.nan, np.float32)
    detected = np.zeros(count, bool)
    chosen: dict[str, Any] | None = None
    if track is not None:
        implausible = 0
        for frame, face in track.faces.items():
            found = face.landmarks
            if found is None or not plausible_landmarks(found.points, face.box, face.keypoints):
                implausible += 1
                continue
            raw_bboxes[frame] = face.box
            landmarks[frame] = found.points
            if found.mesh is not None:
                mesh[frame] = found.mesh
            detected[frame] = True
        boxes = np.array([face.box for face in track.faces.values()], np.float64)
        sizes = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
        chosen = {
            "frames": len(track.faces),
            "first_frame": min(track.faces),
            "last_frame": track.last_frame,
            "mean_box_size_px": round(float(sizes.mean()), 2),
            "mean_score": round(float(boxes[:, 4].mean()), 4),
            "implausible_frames": implausible,
        }
    info = {
        "backend": model.name,
        "frames": count,
        "frames_with_face": int(detected.sum()),
        "coverage": _fraction(detected),
        "chosen_track": chosen,
        "filled_frames": 0,
        "filter_threshold": model.filter_threshold,
    }
    return FaceTrackResult(raw_bboxes, landmarks, mesh, detected, detected.copy(), info)


def _fraction(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if mask.size else 0.0


# --------------------------------------------------------------------------------------
# After the pass
# --------------------------------------------------------------------------------------


def fill_gaps(result: FaceTrackResult, max_gap_frames: int) -> FaceTrackResult:
    """A copy of ``result`` with short gaps between detected frames interpolated.

    A run of at most ``max_gap_frames`` frames without a valid face, with a detected frame
    on both sides, gets boxes (score included), landmarks and mesh linearly interpolated
    between those two frames and is marked ``valid`` (``detected`` stays False). Longer gaps
    and gaps at the start or end stay NaN and invalid.
    """
    out = replace(
        result,
        raw_bboxes=result.raw_bboxes.copy(),
        landmarks=result.landmarks.copy(),
        landmarks_mesh=result.landmarks_mesh.copy(),
        detected=result.detected.copy(),
        valid=result.valid.copy(),
        info=dict(result.info),
    )
    detected_at = np.flatnonzero(out.detected)
    filled = 0
    for before, after in itertools.pairwise(detected_at):
        gap = after - before - 1
        if gap == 0 or gap > max_gap_frames or out.valid[before + 1 : after].all():
            continue
        weights = np.arange(1, gap + 1, dtype=np.float32) / (gap + 1)
        for array in (out.raw_bboxes, out.landmarks, out.landmarks_mesh):
            start, end = array[before], array[after]
            w = weights.reshape(gap, *([1] * start.ndim))
            array[before + 1 : after] = start * (1 - w) + end * w
        filled += int((~out.valid[before + 1 : after]).sum())
        out.valid[before + 1 : after] = True
    out.info["filled_frames"] = int(result.info.get("filled_frames", 0)) + filled
    out.info["coverage"] = _fraction(out.valid)
    return out


def check_coverage(
    result: FaceTrackResult, min_face_coverage: float = 0.5, min_track_frames: int = 3
) -> None:
    """Reject (:class:`InputRejected`) a clip whose followed face is missing or too rare.

    - "no face": nothing detected, or the chosen track spans fewer than
      ``min_track_frames`` frames (a one-off detection is not a face to follow);
    - "face landmarks implausible": the mesh failed the sanity check (upside down, not a
      face) in most of the chosen track's frames;
    - "face in 37% of frames": valid coverage (detected or filled) under
      ``min_face_coverage`` (percent rounded down).
    """
    chosen = result.info.get("chosen_track")
    if not chosen:
        raise InputRejected("no face: no face detected in any frame")
    if chosen["frames"] < min_track_frames:
        raise InputRejected(
            f"no face: the main face is seen in {chosen['frames']} frame(s), "
            f"fewer than min_track_frames={min_track_frames}"
        )
    if chosen.get("implausible_frames", 0) * 2 > chosen["frames"]:
        percent = math.floor(100 * chosen["implausible_frames"] / chosen["frames"] + 1e-9)
        raise InputRejected(
            f"face landmarks implausible (upside down or not a face) in {percent}% of the "
            "frames where the main face is detected"
        )
    if not result.detected.any():
        raise InputRejected("no face: no face with usable landmarks in any frame")
    coverage = float(result.valid.mean())
    if coverage < min_face_coverage:
        percent = math.floor(100 * coverage + 1e-9)
        raise InputRejected(
            f"face in {percent}% of frames (min_face_coverage "
            f"{math.floor(100 * min_face_coverage + 1e-9)}%)"
        )
