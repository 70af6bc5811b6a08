"""Faces family: RGB frames -> one tracked face per frame: box, 68 landmarks, 478-point mesh.

The clip-level functions, for any :class:`~dpl_assets.nodes.face_model.FaceModel`:
:func:`track_faces` (detect, landmark and track every face, follow the main one) and
:func:`landmarks_in_boxes` (landmarks in given boxes, no detection). The pieces live in:

- :mod:`~dpl_assets.nodes.face_model`: the model interface and its input checks;
- :mod:`~dpl_assets.nodes.mediapipe_faces`: :class:`FaceAnalyzer`, the default model
  (mediapipe's detector and mesh, offline; the 478 -> 68 point table and its source);
- :mod:`~dpl_assets.nodes.fan_faces`: the optional ``face-alignment`` backend;
- :mod:`~dpl_assets.nodes.face_tracking`: tracks and the choice of the followed face,
  :class:`FaceTrackResult`, :func:`fill_gaps` and :func:`check_coverage`.

Per frame, the :data:`MAX_FACES_PER_FRAME` largest detections are landmarked and linked
into tracks; after the pass the track with the largest summed box area is followed.
Because that choice needs the whole pass and the frames come as a one-shot stream, the mesh
is run for every tracked face and kept per track; only the chosen track's is returned.
Memory: 478 x 3 float32 (5.7 kB) per face and frame, i.e. the size of the output times the
number of faces on screen.

Landmark sanity: a landmark model run on an upside-down face (or on no face) returns
points without any error, so each face's 68 points must agree with the detection: the
eyes-to-mouth direction within :data:`MAX_AXIS_DISAGREEMENT_DEG` of the detector
keypoints' (when the detector gives keypoints), the roll (that direction against the
image's down) within +-:data:`MAX_ROLL_DEG`, and the eye/mouth centre inside the box.
A face failing this (or for which the model finds no landmarks) still counts for
tracking, but its frame has no face in the result (``implausible_frames`` in ``info``).

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)``; boxes ``[x1, y1, x2, y2, score]`` px.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from dpl_assets.nodes.face_model import (
    DEFAULT_FILTER_THRESHOLD,
    MESH_POINTS,
    FaceLandmarks,
    FaceModel,
    as_rgb,
)
from dpl_assets.nodes.face_tracking import (
    FaceInFrame,
    FaceTrack,
    FaceTrackResult,
    check_coverage,
    coverage_fraction,
    fill_gaps,
    link_faces,
    main_track,
)
from dpl_assets.nodes.mediapipe_faces import MEDIAPIPE_TO_68, FaceAnalyzer, mesh_to_68
from dpl_assets.outcomes import InputRejected

__all__ = [
    "DEFAULT_FILTER_THRESHOLD",
    "MAX_FACES_PER_FRAME",
    "MEDIAPIPE_TO_68",
    "FaceAnalyzer",
    "FaceLandmarks",
    "FaceModel",
    "FaceTrackResult",
    "check_coverage",
    "fill_gaps",
    "landmarks_in_boxes",
    "mesh_to_68",
    "plausible_landmarks",
    "track_faces",
]

MAX_FACES_PER_FRAME = 4  # the largest detections per frame that get tracked and landmarked
EYES_68 = slice(36, 48)
MOUTH_68 = slice(48, 68)
MAX_AXIS_DISAGREEMENT_DEG = 60.0
MAX_ROLL_DEG = 100.0


# --------------------------------------------------------------------------------------
# Landmark sanity
# --------------------------------------------------------------------------------------


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
# A clip
# --------------------------------------------------------------------------------------


def track_faces(model: FaceModel, frames: Iterable[np.ndarray]) -> FaceTrackResult:
    """Follow the main face through ``frames`` (RGB uint8 (H, W, 3)), one pass, streamed.

    Every face is detected, landmarked and tracked; the track with the largest summed box
    area is returned (see :mod:`~dpl_assets.nodes.face_tracking`). ``valid`` equals
    ``detected`` here: :func:`fill_gaps` fills short gaps afterwards. ValueError for a frame
    that is not RGB uint8.
    """
    tracks: list[FaceTrack] = []
    count = 0
    max_faces = 0
    for index, frame in enumerate(frames):
        rgb = as_rgb(frame)
        detections = model.detect(rgb)
        max_faces = max(max_faces, len(detections))
        faces = [FaceInFrame(box, keypoints) for box, keypoints in detections[:MAX_FACES_PER_FRAME]]
        for face in faces:
            face.landmarks = model.landmarks(rgb, face.box)
        link_faces(tracks, index, faces)
        count = index + 1
    result = _assemble(main_track(tracks), count, model)
    result.info.update(tracks_seen=len(tracks), max_faces_in_a_frame=max_faces)
    return result


def landmarks_in_boxes(
    model: FaceModel, frames: Iterable[np.ndarray], boxes: np.ndarray
) -> FaceTrackResult:
    """Landmarks of the face in given boxes (N, 4|5) px, one row per frame, NaN = no face.

    No detection and no tracking: the boxes say where the followed face is (the original's
    ``FaceLandmarksNode``). A box without a score gets score 1. Raises
    :class:`InputRejected` when the boxes are not (N, 4) or (N, 5) or the number of boxes
    is not the number of frames; ValueError for a frame that is not RGB uint8.
    """
    boxes = np.asarray(boxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 5):
        raise InputRejected(f"given boxes must be (N, 4) or (N, 5), not {boxes.shape}")
    if boxes.shape[1] == 4:
        boxes = np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)
    track = FaceTrack()
    count = 0
    for index, frame in enumerate(frames):
        count = index + 1
        if index >= len(boxes):
            continue  # only counted, for the message below
        rgb = as_rgb(frame)
        if np.isfinite(boxes[index, :4]).all():
            face = FaceInFrame(boxes[index], None)
            face.landmarks = model.landmarks(rgb, face.box)
            track.add(index, face)
    if count != len(boxes):
        raise InputRejected(f"given boxes cover {len(boxes)} frames, the video has {count}")
    result = _assemble(track if track.faces else None, count, model)
    result.info.update(tracks_seen=None, max_faces_in_a_frame=None, bboxes="given")
    return result


def _assemble(track: FaceTrack | None, count: int, model: FaceModel) -> FaceTrackResult:
    """The followed track's plausible faces as frame-indexed arrays over ``count`` frames,
    with the ``info`` record."""
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
        chosen = _chosen_track_info(track, implausible)
    info = {
        "backend": model.name,
        "frames": count,
        "frames_with_face": int(detected.sum()),
        "coverage": coverage_fraction(detected),
        "chosen_track": chosen,
        "filled_frames": 0,
        "filter_threshold": model.filter_threshold,
    }
    return FaceTrackResult(raw_bboxes, landmarks, mesh, detected, detected.copy(), info)


def _chosen_track_info(track: FaceTrack, implausible: int) -> dict[str, Any]:
    """The ``chosen_track`` record of ``info``: frames, span, mean box size (px, the mean
    of width and height), mean score and the number of implausible frames."""
    boxes = np.array([face.box for face in track.faces.values()], np.float64)
    sizes = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    return {
        "frames": len(track.faces),
        "first_frame": min(track.faces),
        "last_frame": track.last_frame,
        "mean_box_size_px": round(float(sizes.mean()), 2),
        "mean_score": round(float(boxes[:, 4].mean()), 4),
        "implausible_frames": implausible,
    }
