"""Following one face through a clip: tracks, the result, gap filling and the coverage check.

- **Tracking** (:func:`link_faces`): detections are linked frame to frame into tracks,
  greedily by IoU (the best-overlapping pairs first): at least :data:`TRACK_IOU` with a
  track's last box when the track was seen within the last :data:`TRACK_MAX_SKIP_FRAMES`
  frames, at least :data:`TRACK_RESUME_IOU` after a longer absence (the speaker looked away
  and came back to the same place). A detection that matches no track starts a new one.
  (In tracking mode the detector runs every few frames; in between, and for a face the
  detector misses, each track is extended by its own landmark tracker: see
  :mod:`~dpl_assets.nodes.faces`.)
- **Identity** (:func:`main_track`): after the pass, the one track with the largest sum over
  its frames of box area (pixels²) is followed: the face that is both large and persistent,
  so a big face seen for a moment and a small face in the background lose to the speaker.
- **Storage**: a :class:`FaceTrack` keeps its faces as float32 columns (a few kB per frame,
  no per-frame objects: :mod:`~dpl_assets.nodes.face_columns`); only its latest face is a
  :class:`FaceInFrame`, which the pass still completes.
- **Every track** (:class:`TrackSummary`, :func:`tracks_record`): each track's boxes and
  mouth opening per frame are kept after the pass (small: 6 numbers a frame), so that the
  audio-visual sync (:mod:`~dpl_assets.nodes.av_sync`) can score every face, and the face
  node can follow the speaking face instead of the largest.
- **After the pass**: :func:`fill_gaps` interpolates short gaps of a
  :class:`FaceTrackResult`; :func:`check_coverage` rejects a clip whose face is missing or
  too rare.

Boxes are ``[x1, y1, x2, y2, score]`` in pixels of the frame (``x`` right, ``y`` down).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dpl_assets.nodes.face_columns import HAS_KEYPOINTS, HAS_LANDMARKS, HAS_MESH, FaceColumns
from dpl_assets.nodes.face_model import FaceLandmarks
from dpl_assets.outcomes import InputRejected

TRACK_IOU = 0.3
TRACK_MAX_SKIP_FRAMES = 5
TRACK_RESUME_IOU = 0.5


@dataclass
class FaceTrackResult:
    """The followed face in each of N frames (pixels of the frames; NaN where no face).

    - ``raw_bboxes`` float32 (N, 5): detector box ``[x1, y1, x2, y2, score]``; in tracking
      mode, between detections, the last detection's box moved and scaled with the face's
      landmarks, with that detection's score (see :mod:`~dpl_assets.nodes.faces`).
    - ``landmarks`` float32 (N, 68, 2): iBUG 68 points ``(x, y)``.
    - ``landmarks_mesh`` float32 (N, 478, 3): mediapipe mesh ``(x, y, z)``, z in px units.
    - ``detected`` bool (N,): the face was found (and passed the sanity check) in the frame.
    - ``valid`` bool (N,): detected, or filled in by :func:`fill_gaps`.
    - ``info``: JSON-able record (frames, frames_with_face, coverage, tracks_seen,
      max_faces_in_a_frame, chosen_track, filled_frames, filter_threshold; from
      :func:`~dpl_assets.nodes.faces.track_faces` also landmark_mode, detect_every and
      detector_frames).
    """

    raw_bboxes: np.ndarray
    landmarks: np.ndarray
    landmarks_mesh: np.ndarray
    detected: np.ndarray
    valid: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    tracks: list[TrackSummary] = field(default_factory=list)
    """Every track's summary (:class:`TrackSummary`), the followed one first, then by
    summed box area (:func:`tracks_record` writes them)."""

    def __len__(self) -> int:
        return int(self.detected.shape[0])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (0..1) of two boxes ``[x1, y1, x2, y2, ...]`` (pixels)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def coverage_fraction(mask: np.ndarray) -> float:
    """Fraction of True in a bool (N,) mask, rounded to 4 decimals (0.0 for N = 0)."""
    return round(float(mask.mean()), 4) if mask.size else 0.0


# --------------------------------------------------------------------------------------
# Tracks
# --------------------------------------------------------------------------------------


@dataclass
class FaceInFrame:
    """One face in one frame: box (5,) px + score, detector keypoints (6, 2) px or None,
    and the landmarks found in the box (None until run, or when the model found none)."""

    box: np.ndarray
    keypoints: np.ndarray | None
    landmarks: FaceLandmarks | None = None


class FaceTrack:
    """One face followed over frames: its faces by frame index (increasing), the last frame
    it was seen in, and the sum of its box areas (pixels²), the measure :func:`main_track`
    ranks by.

    The latest face is kept as given (:attr:`last_face`, a :class:`FaceInFrame`): the pass
    still sets its landmarks and reads its box and keypoints. When a later frame is added
    (or :meth:`finish` is called) it is copied into :attr:`columns`, float32 blocks of a
    few kB per frame (:mod:`~dpl_assets.nodes.face_columns`), and the object is dropped:
    a long clip's track holds no per-frame objects.
    """

    def __init__(self) -> None:
        self.columns = FaceColumns()
        self.last_face: FaceInFrame | None = None
        self.last_frame = -1
        self.area_sum = 0.0
        self._last_stored = True  # last_face is in columns (or there is none)

    def __len__(self) -> int:
        return len(self.columns) + (not self._last_stored)

    @property
    def last_box(self) -> np.ndarray:
        assert self.last_face is not None, "an empty track has no box"
        return self.last_face.box

    @property
    def faces(self) -> Mapping[int, FaceInFrame]:
        """The faces by frame index (read-only; stored frames are rebuilt from the columns,
        the latest is :attr:`last_face` itself)."""
        return _TrackFaces(self)

    def add(self, frame: int, face: FaceInFrame) -> None:
        """Append frame ``frame``'s face (ValueError unless after :attr:`last_frame`)."""
        if frame <= self.last_frame:
            raise ValueError(f"frame {frame} is not after the track's last, {self.last_frame}")
        self.finish()
        self.last_face = face
        self.last_frame = frame
        self._last_stored = False
        self.area_sum += float((face.box[2] - face.box[0]) * (face.box[3] - face.box[1]))

    def finish(self) -> None:
        """Store the latest face in the columns (its landmarks no longer change)."""
        face = self.last_face
        if self._last_stored or face is None:
            return
        found = face.landmarks
        self.columns.append(
            self.last_frame,
            face.box,
            face.keypoints,
            None if found is None else found.points,
            None if found is None else found.mesh,
        )
        self._last_stored = True


class _TrackFaces(Mapping[int, FaceInFrame]):
    """:attr:`FaceTrack.faces`: frame index -> :class:`FaceInFrame`, in frame order."""

    def __init__(self, track: FaceTrack) -> None:
        self.track = track

    def __len__(self) -> int:
        return len(self.track)

    def __iter__(self) -> Iterator[int]:
        track = self.track
        for block in track.columns.blocks:
            yield from (int(frame) for frame in block.frames[: block.n])
        if not track._last_stored:
            yield track.last_frame

    def __getitem__(self, frame: int) -> FaceInFrame:
        track = self.track
        if frame == track.last_frame and track.last_face is not None:
            return track.last_face
        block, row = track.columns.row(frame)
        flags = int(block.flags[row])
        landmarks = None
        if flags & HAS_LANDMARKS:
            mesh = block.mesh[row].copy() if flags & HAS_MESH and block.mesh is not None else None
            landmarks = FaceLandmarks(block.points[row].copy(), mesh)
        keypoints = block.keypoints[row].copy() if flags & HAS_KEYPOINTS else None
        return FaceInFrame(block.boxes[row].copy(), keypoints, landmarks)


def link_faces(tracks: list[FaceTrack], frame: int, faces: list[FaceInFrame]) -> None:
    """Append frame ``frame``'s faces to ``tracks`` in place: greedy best-IoU matching
    (thresholds in the module docstring), then a new track for each face left over."""
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
            track = FaceTrack()
            track.add(frame, face)
            tracks.append(track)


def main_track(tracks: list[FaceTrack]) -> FaceTrack | None:
    """The track with the largest summed box area (the first of equals); None if none."""
    return max(tracks, key=lambda t: t.area_sum) if tracks else None


@dataclass(frozen=True)
class TrackSummary:
    """One track's faces, small: ``frames`` int32 (M,) frame indices (increasing),
    ``boxes`` float32 (M, 5) ``[x1, y1, x2, y2, score]`` px, ``mouth_opening`` float32 (M,)
    (:func:`~dpl_assets.nodes.av_sync.mouth_opening`; NaN where the landmarks are missing
    or implausible) and ``area_sum`` (px², what :func:`main_track` ranks by)."""

    frames: np.ndarray
    boxes: np.ndarray
    mouth_opening: np.ndarray
    area_sum: float

    def on_frames(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Boxes float32 (count, 5) and mouth opening float32 (count,) on all ``count``
        frames of the clip, NaN where the track is absent."""
        boxes = np.full((count, 5), np.nan, np.float32)
        mouth = np.full(count, np.nan, np.float32)
        boxes[self.frames] = self.boxes
        mouth[self.frames] = self.mouth_opening
        return boxes, mouth


MAX_TRACKS_RECORDED = 16  # the followed track and the largest others, in the record


def tracks_record(tracks: list[TrackSummary], count: int) -> dict[str, Any]:
    """The ``face_tracks`` record (JSON-able) of ``tracks`` (the followed one first) over
    ``count`` frames: ``frames``, and per track (at most :data:`MAX_TRACKS_RECORDED`)
    ``track`` (its index here), ``followed``, ``first_frame``, ``last_frame``,
    ``frames_with_face``, ``area_sum_px2``, and from its first to its last frame
    ``boxes`` (``[x1, y1, x2, y2, score]`` px, 2 decimals) and ``mouth_opening`` (4
    decimals), null where the face is absent. Read back with :func:`track_arrays`."""

    def values(array: np.ndarray, decimals: int) -> list[Any]:
        rounded = np.round(array.astype(np.float64), decimals)
        finite = np.isfinite(rounded).reshape(len(rounded), -1).all(axis=1)
        return [row.tolist() if ok else None for row, ok in zip(rounded, finite, strict=False)]

    entries = []
    for index, track in enumerate(tracks[:MAX_TRACKS_RECORDED]):
        first, last = int(track.frames[0]), int(track.frames[-1])
        boxes, mouth = track.on_frames(count)
        entries.append(
            {
                "track": index,
                "followed": index == 0,
                "first_frame": first,
                "last_frame": last,
                "frames_with_face": int(np.isfinite(track.mouth_opening).sum()),
                "area_sum_px2": round(track.area_sum, 1),
                "boxes": values(boxes[first : last + 1], 2),
                "mouth_opening": values(mouth[first : last + 1], 4),
            }
        )
    return {"frames": count, "tracks": entries}


def track_arrays(record: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per track of a ``face_tracks`` record (:func:`tracks_record`): boxes float32
    (N, 5) px and mouth opening float32 (N,) over the clip's N frames, NaN where absent."""
    count = int(record["frames"])
    out = []
    for entry in record["tracks"]:
        boxes = np.full((count, 5), np.nan, np.float32)
        mouth = np.full(count, np.nan, np.float32)
        first = int(entry["first_frame"])
        for offset, (box, opening) in enumerate(
            zip(entry["boxes"], entry["mouth_opening"], strict=False)
        ):
            if box is not None:
                boxes[first + offset] = box
            if opening is not None:
                mouth[first + offset] = opening
        out.append((boxes, mouth))
    return out


# --------------------------------------------------------------------------------------
# After the pass
# --------------------------------------------------------------------------------------


def fill_gaps(
    result: FaceTrackResult, max_gap_frames: int, in_place: bool = False
) -> FaceTrackResult:
    """A copy of ``result`` (``result`` itself when ``in_place``: no second copy of the
    clip's mesh) with short gaps between detected frames interpolated.

    A run of at most ``max_gap_frames`` frames without a valid face, with a detected frame
    on both sides, gets boxes (score included), landmarks and mesh linearly interpolated
    between those two frames and is marked ``valid`` (``detected`` stays False). Longer gaps
    and gaps at the start or end stay NaN and invalid. ``info`` gets the new
    ``filled_frames`` total and ``coverage``.
    """
    out = (
        result
        if in_place
        else replace(
            result,
            raw_bboxes=result.raw_bboxes.copy(),
            landmarks=result.landmarks.copy(),
            landmarks_mesh=result.landmarks_mesh.copy(),
            detected=result.detected.copy(),
            valid=result.valid.copy(),
            info=dict(result.info),
        )
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
    out.info["filled_frames"] = int(out.info.get("filled_frames", 0)) + filled
    out.info["coverage"] = coverage_fraction(out.valid)
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
      ``min_face_coverage`` (a fraction 0..1; percent rounded down in the message).
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
