"""What every face model gives the tracking: the :class:`FaceModel` interface and its checks.

Two backends implement it: :class:`dpl_assets.nodes.mediapipe_faces.FaceAnalyzer` (the
default, offline) and :class:`dpl_assets.nodes.fan_faces.FanFaceModel` (the optional
``face-alignment`` package). :func:`dpl_assets.nodes.faces.track_faces` and
:func:`dpl_assets.nodes.faces.landmarks_in_boxes` run any of them over a clip.

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)``. Boxes are ``[x1, y1, x2, y2, score]`` px and may reach past the
frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self, runtime_checkable

import numpy as np

MESH_POINTS = 478
"""Points of mediapipe's dense face mesh (468 + 10 iris points)."""

DEFAULT_FILTER_THRESHOLD = 0.5
"""Minimum detection score. The original's example graph used 0.9 with its own detector;
BlazeFace scores real frontal faces 0.7-0.95 and small or turned ones lower, and it gives
no false positives on flat, synthetic or noise frames even at 0, so 0.5 keeps hard faces
without letting clutter in (tracking and ``min_track_frames`` filter the rest)."""


LandmarkMode = Literal["tracking", "static"]
"""How :func:`dpl_assets.nodes.faces.track_faces` finds landmarks: ``"tracking"`` (the
detector every ``detect_every`` frames, a tracking-mode mesh per face in between) or
``"static"`` (the detector and a static mesh on every frame)."""

DEFAULT_LANDMARK_MODE: LandmarkMode = "tracking"

DEFAULT_DETECT_EVERY = 10
"""Frames between detector runs in tracking mode. Chosen with ``benchmarks/face_accuracy.py``
(``benchmarks/results/face_accuracy.json``): on the benchmark clips the face stage's CPU
frames/s were 1.4x / 2.3x / 2.4x / 2.5x static mode's with 1 / 5 / 10 / 20 (two runs
agreed within 0.05x; absolute speeds differed 1.5x), with the same landmarks for every
stride; 10 is near the plateau. A face appearing while another is followed is found
within 10 frames (0.4 s at 25 fps); with no face followed the detector runs on every
frame."""


@dataclass(frozen=True)
class FaceLandmarks:
    """Landmarks of one face in one frame: ``points`` float32 (68, 2) px (iBUG order) and,
    from models that have it, the dense ``mesh`` float32 (478, 3) px (else None)."""

    points: np.ndarray
    mesh: np.ndarray | None = None


class FaceModel(Protocol):
    """A face detector + landmark model, run one frame at a time (see
    :func:`dpl_assets.nodes.faces.track_faces`).

    Implemented by :class:`dpl_assets.nodes.mediapipe_faces.FaceAnalyzer` (mediapipe,
    offline) and :class:`dpl_assets.nodes.fan_faces.FanFaceModel` (the ``face-alignment``
    package).
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


class LandmarkTracker(Protocol):
    """Landmarks of one face followed frame by frame (a stateful model: calls must be that
    face's frames in order)."""

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the face in ``box`` ``[x1, y1, x2, y2, ...]`` px, or None (lost)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class TrackingFaceModel(FaceModel, Protocol):
    """A :class:`FaceModel` that can also follow faces between detections (tracking mode
    of :func:`dpl_assets.nodes.faces.track_faces`): implemented by
    :class:`dpl_assets.nodes.mediapipe_faces.FaceAnalyzer`."""

    def landmark_tracker(self) -> LandmarkTracker:
        """A new tracker for one face, closed by the caller when the face is lost."""
        ...

    def predict_box(self, landmarks: FaceLandmarks) -> np.ndarray | None:
        """The detector's box (4,) ``[x1, y1, x2, y2]`` px of the face these ``landmarks``
        are of (tracking moves and scales boxes between detections as this box moves and
        scales), or None when they cannot tell."""
        ...


class ClosedOnExit:
    """Base of the face models: ``with Model() as model:`` calls ``model.close()`` at the end
    (subclasses define :meth:`close`, which frees the loaded model)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def check_threshold(filter_threshold: float) -> float:
    """``filter_threshold`` (a detection score) itself; ValueError when not in [0, 1]."""
    if not 0.0 <= filter_threshold <= 1.0:
        raise ValueError(f"filter_threshold must be in [0, 1], not {filter_threshold}")
    return filter_threshold


def largest_first(
    faces: list[tuple[np.ndarray, np.ndarray | None]],
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Detections ``(box [x1, y1, x2, y2, ...] px, keypoints)`` sorted by box area (px²),
    largest first."""
    return sorted(faces, key=lambda f: -float((f[0][2] - f[0][0]) * (f[0][3] - f[0][1])))


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """``frame`` as a C-contiguous RGB uint8 (H, W, 3) array; ValueError for anything else."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frames must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)
