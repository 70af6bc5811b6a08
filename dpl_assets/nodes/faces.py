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

Per detection, the :data:`MAX_FACES_PER_FRAME` largest faces are landmarked and linked
into tracks by IoU; after the pass the track with the largest summed box area is followed.
Two ways to get there (``landmark_mode`` of :func:`track_faces`):

- ``"tracking"`` (the default; MediaPipe's own tracking approach, per face): the detector
  runs every ``detect_every`` frames, on any frame where a followed face cannot be
  followed (its mesh lost or implausible, or its box drifted: see
  :meth:`_TrackingPass._follow`), and on every frame while no face is followed; so a new
  face is found within ``detect_every`` frames and a lost face is looked for at once.
  Each track a detection starts (or brings back) gets its own landmark tracker (mediapipe:
  a tracking-mode :class:`~dpl_assets.nodes.mediapipe_faces.MeshTracker` on a crop that
  follows the face), closed when the face is lost: at most :data:`MAX_FACES_PER_FRAME`
  are open. Between detections the tracker finds each face's landmarks around its
  previous frame's box, and the face's box is the one of its last detection moved and
  scaled as the landmarks' box (:meth:`FaceAnalyzer.predict_box`, the detector's
  convention) moved and scaled since; its score is that detection's. On a detection
  frame, detections are linked to tracks by IoU with each track's latest box (detected
  or followed) exactly as in static mode, and a detected face's box is the detector's;
  a followed face that no detection matched goes on while its tracker finds it and no
  detection overlaps it (as MediaPipe's own tracking keeps a face the detector misses).
- ``"static"``: the detector and the static mesh on every frame (the behaviour before
  tracking mode, output unchanged); also used for models without tracking (the
  face-alignment backend).

Because the choice of track needs the whole pass and the frames come as a one-shot stream,
the landmarks are found for every tracked face and kept per track; only the chosen
track's are returned, with every track's boxes and mouth opening
(:class:`~dpl_assets.nodes.face_tracking.TrackSummary`: what the audio-visual sync needs
to score each face, and ``follow`` to pick the speaking one). Memory: ~6.4 kB per face
and frame (float32 columns, mostly the 478 x 3 mesh:
:mod:`~dpl_assets.nodes.face_columns`), i.e. the size of the output times the number of
faces on screen; the other tracks are dropped before the output is built
and the chosen one is freed block by block as it is copied in.

Landmark sanity: a landmark model run on an upside-down face (or on no face) returns
points without any error, so each face's 68 points must agree with the detection: the
eyes-to-mouth direction within :data:`MAX_AXIS_DISAGREEMENT_DEG` of the detector
keypoints' (when the detector gives keypoints; a predicted box has none), the roll (that
direction against the image's down) within +-:data:`MAX_ROLL_DEG`, and the eye/mouth
centre inside the box (for a predicted box: the face has not moved out of the box its
previous frame predicted). A face failing this (or for which the model finds no
landmarks) still counts for tracking, but its frame has no face in the result
(``implausible_frames`` in ``info``); in tracking mode such a face between detections
makes the detector run on that frame instead.

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)``; boxes ``[x1, y1, x2, y2, score]`` px.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpl_assets.memory import release_free_heap
from dpl_assets.nodes.av_sync import mouth_opening
from dpl_assets.nodes.face_columns import HAS_KEYPOINTS, HAS_LANDMARKS, HAS_MESH, FaceBlock
from dpl_assets.nodes.face_model import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_FILTER_THRESHOLD,
    DEFAULT_LANDMARK_MODE,
    MESH_POINTS,
    FaceLandmarks,
    FaceModel,
    LandmarkMode,
    LandmarkTracker,
    TrackingFaceModel,
    as_rgb,
)
from dpl_assets.nodes.face_tracking import (
    TRACK_IOU,
    FaceInFrame,
    FaceTrack,
    FaceTrackResult,
    TrackSummary,
    box_iou,
    check_coverage,
    coverage_fraction,
    fill_gaps,
    link_faces,
    main_track,
)
from dpl_assets.nodes.mediapipe_faces import MEDIAPIPE_TO_68, FaceAnalyzer, mesh_to_68
from dpl_assets.outcomes import InputRejected

__all__ = [
    "DEFAULT_DETECT_EVERY",
    "DEFAULT_FILTER_THRESHOLD",
    "DEFAULT_LANDMARK_MODE",
    "MAX_FACES_PER_FRAME",
    "MEDIAPIPE_TO_68",
    "FaceAnalyzer",
    "FaceLandmarks",
    "FaceModel",
    "FaceTrackResult",
    "LandmarkMode",
    "TrackSummary",
    "check_coverage",
    "fill_gaps",
    "landmarks_in_boxes",
    "mesh_to_68",
    "plausible_landmarks",
    "summarize_tracks",
    "track_faces",
]

MAX_FACES_PER_FRAME = 4  # the largest detections per frame that get tracked and landmarked
EYES_68 = slice(36, 48)
MOUTH_68 = slice(48, 68)
MAX_AXIS_DISAGREEMENT_DEG = 60.0
MAX_ROLL_DEG = 100.0
MAX_PREDICTED_SIDE_CHANGE = 1.5  # a predicted box this many times larger/smaller: re-detect


# --------------------------------------------------------------------------------------
# Landmark sanity
# --------------------------------------------------------------------------------------


def _angle_deg(ux: float, uy: float, vx: float, vy: float) -> float:
    """Unsigned angle between two 2-D vectors ``(ux, uy)`` and ``(vx, vy)``, degrees."""
    cos = (ux * vx + uy * vy) / (math.hypot(ux, uy) * math.hypot(vx, vy) + 1e-9)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


# Means of the eyes' and the mouth's points as products (numpy's mean() costs more here).
_EYES_MEAN = np.full(EYES_68.stop - EYES_68.start, 1 / (EYES_68.stop - EYES_68.start))
_MOUTH_MEAN = np.full(MOUTH_68.stop - MOUTH_68.start, 1 / (MOUTH_68.stop - MOUTH_68.start))


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
    # Python floats: this runs a few times per tracked frame (numpy's per-call cost on
    # 2-vectors made it ~4x slower: 18 against 4 us a call).
    eye_x, eye_y = (_EYES_MEAN @ points[EYES_68, :2]).tolist()
    mouth_x, mouth_y = (_MOUTH_MEAN @ points[MOUTH_68, :2]).tolist()
    axis_x, axis_y = mouth_x - eye_x, mouth_y - eye_y
    if not math.isfinite(axis_x + axis_y) or math.hypot(axis_x, axis_y) < 1e-3:
        return False
    if keypoints is not None:
        (left_x, left_y), (right_x, right_y), _, (kp_mouth_x, kp_mouth_y) = keypoints[:4].tolist()
        detector_x = kp_mouth_x - (left_x + right_x) / 2
        detector_y = kp_mouth_y - (left_y + right_y) / 2
        if _angle_deg(axis_x, axis_y, detector_x, detector_y) > MAX_AXIS_DISAGREEMENT_DEG:
            return False
    if _angle_deg(axis_x, axis_y, 0.0, 1.0) > MAX_ROLL_DEG:
        return False
    centre_x, centre_y = (eye_x + mouth_x) / 2, (eye_y + mouth_y) / 2
    x1, y1, x2, y2 = (float(value) for value in box[:4])
    return x1 <= centre_x <= x2 and y1 <= centre_y <= y2


# --------------------------------------------------------------------------------------
# A clip
# --------------------------------------------------------------------------------------


def track_faces(
    model: FaceModel,
    frames: Iterable[np.ndarray],
    landmark_mode: LandmarkMode = DEFAULT_LANDMARK_MODE,
    detect_every: int = DEFAULT_DETECT_EVERY,
    follow: Callable[[list[TrackSummary]], int | None] | None = None,
) -> FaceTrackResult:
    """Follow the main face through ``frames`` (RGB uint8 (H, W, 3)), one pass, streamed.

    Every face is detected, landmarked and tracked; the track with the largest summed box
    area is returned (see :mod:`~dpl_assets.nodes.face_tracking`), or the one ``follow``
    picks: given every track's :class:`TrackSummary` (in the order tracks started), it
    returns the index of the track to follow, or None for the largest (the face node's
    ``follow: speaking`` picks the face whose mouth moves with the voice). ``tracks`` of
    the result summarizes every track, the followed one first. ``landmark_mode``
    ``"tracking"`` runs the detector every ``detect_every`` frames and follows the faces
    with tracking-mode meshes in between (see the module docstring); ``"static"`` runs the
    detector and a static mesh on every frame (``detect_every`` unused), as does a model
    without tracking (:class:`~dpl_assets.nodes.face_model.TrackingFaceModel`), e.g. the
    face-alignment backend. ``valid`` equals ``detected`` here: :func:`fill_gaps` fills
    short gaps afterwards. ``info`` records the mode used, ``detect_every`` and
    ``detector_frames`` (frames the detector ran on). ValueError for a frame that is not
    RGB uint8, an unknown ``landmark_mode`` or ``detect_every`` < 1.
    """
    if landmark_mode not in ("tracking", "static"):
        raise ValueError(f"landmark_mode must be 'tracking' or 'static', not {landmark_mode!r}")
    if detect_every < 1:
        raise ValueError(f"detect_every must be at least 1, not {detect_every}")
    if landmark_mode == "tracking" and isinstance(model, TrackingFaceModel):
        run: _Pass = _TrackingPass(model, detect_every)
    else:
        run, landmark_mode, detect_every = _StaticPass(model), "static", 1
    count = 0
    try:
        for index, frame in enumerate(frames):
            run.frame(index, as_rgb(frame))
            count = index + 1
    finally:
        run.close()
    summaries = summarize_tracks(run.tracks)
    picked = follow(summaries) if follow is not None else None
    chosen = main_track(run.tracks) if picked is None else run.tracks[picked]
    tracks_seen = len(run.tracks)
    order = _followed_first(summaries, None if chosen is None else run.tracks.index(chosen))
    run.tracks.clear()  # the other tracks' landmarks go before the output is built
    result = _assemble(chosen, count, model)
    result.tracks = [summaries[i] for i in order]
    result.info.update(
        tracks_seen=tracks_seen,
        max_faces_in_a_frame=run.max_faces,
        landmark_mode=landmark_mode,
        detect_every=detect_every,
        detector_frames=run.detector_frames,
    )
    return result


class _Pass:
    """One pass over a clip: the tracks so far, the most faces in a frame and the number of
    frames the detector ran on."""

    def __init__(self) -> None:
        self.tracks: list[FaceTrack] = []
        self.max_faces = 0
        self.detector_frames = 0

    def frame(self, index: int, rgb: np.ndarray) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the pass holds (nothing here)."""

    def _detect(self, model: FaceModel, index: int, rgb: np.ndarray) -> list[FaceInFrame]:
        """The detector on frame ``index``: its :data:`MAX_FACES_PER_FRAME` largest faces,
        linked into the tracks (no landmarks yet)."""
        detections = model.detect(rgb)
        self.detector_frames += 1
        self.max_faces = max(self.max_faces, len(detections))
        faces = [FaceInFrame(box, keypoints) for box, keypoints in detections[:MAX_FACES_PER_FRAME]]
        link_faces(self.tracks, index, faces)
        return faces


class _StaticPass(_Pass):
    """``landmark_mode="static"``: the detector and the model's landmarks on every frame."""

    def __init__(self, model: FaceModel) -> None:
        super().__init__()
        self.model = model

    def frame(self, index: int, rgb: np.ndarray) -> None:
        for face in self._detect(self.model, index, rgb):
            face.landmarks = self.model.landmarks(rgb, face.box)


@dataclass
class _Followed:
    """A track followed in tracking mode: its landmark tracker, and the anchor of its boxes
    between detections: the detector's box (5,) at its last detection and the model's box
    (4,) from that frame's landmarks (None when they were not usable)."""

    tracker: LandmarkTracker
    detector_box: np.ndarray
    landmark_box: np.ndarray | None = None


class _TrackingPass(_Pass):
    """``landmark_mode="tracking"``: the detector every ``detect_every`` frames (and when a
    followed face is lost, and while none is followed); each track's landmark tracker in
    the box of its previous frame; the boxes between detections anchored to the last."""

    def __init__(self, model: TrackingFaceModel, detect_every: int) -> None:
        super().__init__()
        self.model = model
        self.detect_every = detect_every
        self.followed: dict[int, _Followed] = {}  # track index -> its tracker and anchor
        self.last_detection = -detect_every

    def close(self) -> None:
        """Close every landmark tracker still open."""
        while self.followed:
            self.followed.popitem()[1].tracker.close()

    def frame(self, index: int, rgb: np.ndarray) -> None:
        followed: dict[int, FaceInFrame | None] = {}
        if self.followed and index - self.last_detection < self.detect_every:
            followed = {t: self._follow(t, rgb) for t in self.followed}
            found = {t: face for t, face in followed.items() if face is not None}
            if len(found) == len(followed):
                for t, face in found.items():
                    self.tracks[t].add(index, face)
                self.max_faces = max(self.max_faces, len(found))
                return
        self._detect_and_follow(index, rgb, followed)  # one lost, or a detection is due

    def _follow(self, t: int, rgb: np.ndarray) -> FaceInFrame | None:
        """Track ``t``'s face in this frame: its tracker's landmarks in the crop around its
        previous box, with the box they give (:meth:`_box_from`); None when the previous
        frame's landmarks are not usable, or the face is lost, implausible (the landmarks'
        centre left the previous box) or has drifted."""
        track, followed = self.tracks[t], self.followed[t]
        previous = track.last_face
        if previous is None or previous.landmarks is None or followed.landmark_box is None:
            return None
        if not plausible_landmarks(previous.landmarks.points, previous.box, previous.keypoints):
            return None
        found = followed.tracker.landmarks(rgb, previous.box)
        if found is None or not plausible_landmarks(found.points, previous.box):
            return None
        box = self._box_from(found, followed, rgb.shape)
        return None if box is None else FaceInFrame(box, None, found)

    def _box_from(
        self, found: FaceLandmarks, followed: _Followed, shape: tuple[int, ...]
    ) -> np.ndarray | None:
        """The face's box (5,) from landmarks between detections: the last detection's box
        moved and scaled as the model's landmark box moved and scaled since, its score
        carried over. None when the side changed more than
        :data:`MAX_PREDICTED_SIDE_CHANGE`-fold since, or the centre left the frame."""
        box, anchor, detected = (
            self.model.predict_box(found),
            followed.landmark_box,
            followed.detector_box,
        )
        if box is None or anchor is None:
            return None
        scale = float(box[2] - box[0]) / max(float(anchor[2] - anchor[0]), 1e-6)
        if not 1 / MAX_PREDICTED_SIDE_CHANGE <= scale <= MAX_PREDICTED_SIDE_CHANGE:
            return None
        centre = (box[:2] + box[2:4]) / 2
        centre = (
            centre + ((detected[:2] + detected[2:4]) / 2 - (anchor[:2] + anchor[2:4]) / 2) * scale
        )
        half = (detected[2:4] - detected[:2]) / 2 * scale
        if not (0 <= centre[0] < shape[1] and 0 <= centre[1] < shape[0]):
            return None
        return np.array([*(centre - half), *(centre + half), detected[4]], np.float32)

    def _detect_and_follow(
        self, index: int, rgb: np.ndarray, followed: dict[int, FaceInFrame | None]
    ) -> None:
        """The detector on this frame, and each detected face's landmarks from its track's
        tracker (a new one for a new track; ``followed``: the faces the trackers already
        found in this frame, whose landmarks are kept). A followed track no detection
        joined goes on where its tracker still finds the face, no detection overlaps it
        and fewer than :data:`MAX_FACES_PER_FRAME` faces are in the frame; otherwise its
        tracker is closed."""
        detections = self._detect(self.model, index, rgb)
        self.last_detection = index
        joined = [t for t, track in enumerate(self.tracks) if track.last_frame == index]
        room = MAX_FACES_PER_FRAME - len(joined)
        for t in [t for t in self.followed if t not in joined]:
            face = followed[t] if t in followed else self._follow(t, rgb)
            if (
                face is None
                or room <= 0
                or any(box_iou(face.box, d.box) >= TRACK_IOU for d in detections)
            ):
                self.followed.pop(t).tracker.close()
            else:
                self.tracks[t].add(index, face)
                room -= 1
        for t in joined:
            face = self.tracks[t].last_face  # joined: added at this frame
            assert face is not None
            if t not in self.followed:
                self.followed[t] = _Followed(self.model.landmark_tracker(), face.box)
            already = followed.get(t)
            if already is not None:
                face.landmarks = already.landmarks
            else:
                face.landmarks = self.followed[t].tracker.landmarks(rgb, face.box)
            self.followed[t].detector_box = face.box
            self.followed[t].landmark_box = (
                None if face.landmarks is None else self.model.predict_box(face.landmarks)
            )
        self.max_faces = max(self.max_faces, len(self.followed))


def _plausible_rows(block: FaceBlock) -> np.ndarray:
    """bool (block.n,): the block's rows with landmarks that pass :func:`plausible_landmarks`
    against their box (and keypoints, where the detector gave them)."""
    kept = np.zeros(block.n, bool)
    for row in range(block.n):
        flags = int(block.flags[row])
        keypoints = block.keypoints[row] if flags & HAS_KEYPOINTS else None
        kept[row] = bool(flags & HAS_LANDMARKS) and plausible_landmarks(
            block.points[row], block.boxes[row], keypoints
        )
    return kept


def summarize_tracks(tracks: list[FaceTrack]) -> list[TrackSummary]:
    """Each track's :class:`TrackSummary`: frames, boxes, and the mouth opening of its
    plausible landmarks (NaN elsewhere), in the order of ``tracks`` (finished first)."""
    summaries = []
    for track in tracks:
        track.finish()
        mouths = []
        for block in track.columns.blocks:
            mouth = mouth_opening(block.points[: block.n])
            mouth[~_plausible_rows(block)] = np.nan
            mouths.append(mouth)
        summaries.append(
            TrackSummary(
                track.columns.frames(),
                track.columns.boxes(),
                np.concatenate(mouths or [np.empty(0, np.float32)]),
                track.area_sum,
            )
        )
    return summaries


def _followed_first(summaries: list[TrackSummary], followed: int | None) -> list[int]:
    """Indices of ``summaries``: ``followed`` first, then the rest by summed box area."""
    rest = sorted(
        (i for i in range(len(summaries)) if i != followed), key=lambda i: -summaries[i].area_sum
    )
    return rest if followed is None else [followed, *rest]


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
    summaries = summarize_tracks([track]) if len(track) else []
    result = _assemble(track if len(track) else None, count, model)
    result.info.update(tracks_seen=None, max_faces_in_a_frame=None, bboxes="given")
    result.tracks = summaries
    return result


def _assemble(track: FaceTrack | None, count: int, model: FaceModel) -> FaceTrackResult:
    """The followed track's plausible faces as frame-indexed arrays over ``count`` frames,
    with the ``info`` record. Consumes the track: each block of its columns is let go
    once copied (so the output and the whole track are never both in memory)."""
    # Allocated untouched (a large array's pages reach RSS when first written) and written
    # in frame order as the track's blocks are freed, so the output's pages take the
    # track's place instead of adding to them (~570 MB each for a 60-min clip).
    raw_bboxes = np.empty((count, 5), np.float32)
    landmarks = np.empty((count, 68, 2), np.float32)
    mesh = np.empty((count, MESH_POINTS, 3), np.float32)
    outputs = (raw_bboxes, landmarks, mesh)
    written = 0  # rows before this one are written
    detected = np.zeros(count, bool)
    chosen: dict[str, Any] | None = None
    if track is not None:
        track.finish()
        boxes = track.columns.boxes()
        first_frame = int(track.columns.blocks[0].frames[0])
        implausible = 0
        for block in track.columns.drain():
            release_free_heap()  # the previous block, freed when the loop moved on
            end = int(block.frames[block.n - 1]) + 1
            for array in outputs:  # frames without a face, and this block's
                array[written:end] = np.nan
            written = end
            kept = _plausible_rows(block)
            implausible += int(block.n - kept.sum())
            frames = block.frames[: block.n][kept]
            raw_bboxes[frames] = block.boxes[: block.n][kept]
            landmarks[frames] = block.points[: block.n][kept]
            if block.mesh is not None:
                with_mesh = kept & (block.flags[: block.n] & HAS_MESH).astype(bool)
                mesh[block.frames[: block.n][with_mesh]] = block.mesh[: block.n][with_mesh]
            detected[frames] = True
        del block  # the last block
        chosen = _chosen_track_info(boxes, first_frame, track.last_frame, implausible)
    for array in outputs:
        array[written:] = np.nan
    release_free_heap()
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


def _chosen_track_info(
    boxes: np.ndarray, first_frame: int, last_frame: int, implausible: int
) -> dict[str, Any]:
    """The ``chosen_track`` record of ``info`` from the track's boxes (frames, 5) px in
    frame order: frames, span, mean box size (px, the mean of width and height), mean
    score and the number of implausible frames."""
    boxes = boxes.astype(np.float64)
    sizes = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    return {
        "frames": len(boxes),
        "first_frame": first_frame,
        "last_frame": last_frame,
        "mean_box_size_px": round(float(sizes.mean()), 2),
        "mean_score": round(float(boxes[:, 4].mean()), 4),
        "implausible_frames": implausible,
    }
