"""The default face model: mediapipe's face detector and 478-point mesh, offline, on the CPU.

:class:`FaceAnalyzer` implements :class:`~dpl_assets.nodes.face_model.FaceModel` with the
models bundled in the ``mediapipe`` wheel (legacy ``solutions`` API; the Tasks API's
FaceLandmarker needs a downloaded ``.task`` file):

1. **Detection** of *every* face in each frame: BlazeFace full range
   (``FaceDetection(model_selection=1)``), boxes kept when their score is at least
   ``filter_threshold``, largest first.
2. **Landmarks** for a face: a square crop of :data:`MESH_CROP_SCALE` x the box (padded
   with black where it leaves the frame) goes through the static 478-point ``FaceMesh``
   (``refine_landmarks``: iris points included), and the points are mapped back to frame
   pixels. The detector sees the whole frame at 192 px, so a mesh run on the full frame is
   ~12 px off for small faces; on the crop it is not.

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)`` (mediapipe's relative coordinates times the frame size). Boxes are the
detector's and may reach past the frame. Mesh ``z`` is mediapipe's relative depth scaled
like ``x`` (pixels; smaller is nearer the camera, origin near the head's centre).

The 478 -> 68 mapping (:data:`MEDIAPIPE_TO_68`, iBUG 300-W order, the image-left side first
for every symmetric group) is bytedance/LatentSync's ``landmark_points_68``
(``latentsync/utils/image_processor.py``) with 0->127, 1->93, 2->132, 14->361, 15->323,
16->356 (jaw) and 17->70, 26->300 (outer brow ends) changed after comparing with dlib's
68-point predictor on a real face.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from dpl_assets.nodes import native_logs
from dpl_assets.nodes.face_model import (
    DEFAULT_FILTER_THRESHOLD,
    ClosedOnExit,
    FaceLandmarks,
    as_rgb,
    check_threshold,
    largest_first,
)

if TYPE_CHECKING:
    from dpl_assets.nodes.face_tracking import FaceTrackResult

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

MESH_CROP_SCALE = 2.2
MESH_CROP_MAX_SIDE = 512  # larger crops are downscaled first: the mesh model sees 256 px


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """Mesh points (..., 478, C) -> the 68 iBUG points (..., 68, 2) (x, y only)."""
    return mesh[..., MEDIAPIPE_TO_68, :2]


def square_crop(rgb: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` px window of RGB uint8 (H, W, 3) ``rgb`` whose top-left pixel
    is ``(x0, y0)``, black where it leaves the frame: uint8 (side, side, 3), C-contiguous."""
    height, width = rgb.shape[:2]
    inner = rgb[max(y0, 0) : min(y0 + side, height), max(x0, 0) : min(x0 + side, width)]
    if inner.shape[:2] == (side, side):
        return np.ascontiguousarray(inner)
    crop = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = max(-y0, 0), max(-x0, 0)
    crop[top : top + inner.shape[0], left : left + inner.shape[1]] = inner
    return crop


class FaceAnalyzer(ClosedOnExit):
    """The offline face model: mediapipe's detector and 478-point mesh (CPU).

    ``with FaceAnalyzer(filter_threshold=0.5) as analyzer: result = analyzer.analyze(frames)``

    The mediapipe graphs are created on first use and freed by :meth:`close`. One analyzer
    uses about one core; it is not thread-safe (use one per thread), and a process must not
    fork after using it. ValueError for a ``filter_threshold`` outside [0, 1].
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

    # -- per frame -----------------------------------------------------------------------

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """All faces in one RGB uint8 (H, W, 3) frame, largest first.

        Returns ``(box, keypoints)`` pairs: box float32 (5,) ``[x1, y1, x2, y2, score]`` px,
        keypoints float32 (6, 2) px (image-left eye, image-right eye, nose tip, mouth
        centre, image-left ear, image-right ear). ValueError for a frame that is not RGB
        uint8.
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
        centre (downscaled to :data:`MESH_CROP_MAX_SIDE` px when larger); ``z`` is scaled
        like ``x``. ValueError for a frame that is not RGB uint8.
        """
        rgb = as_rgb(rgb)
        _, mesh_model = self._models()
        longer = float(max(box[2] - box[0], box[3] - box[1]))
        side = max(round(MESH_CROP_SCALE * longer), 8)
        x0 = round(float(box[0] + box[2]) / 2 - side / 2)
        y0 = round(float(box[1] + box[3]) / 2 - side / 2)
        crop = square_crop(rgb, x0, y0, side)
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
        """The mesh (478, 3) px of the face in ``box`` and its 68 points (68, 2) px, or None."""
        mesh = self.mesh(rgb, box)
        return None if mesh is None else FaceLandmarks(mesh_to_68(mesh).copy(), mesh)

    # -- a clip --------------------------------------------------------------------------

    def analyze(self, frames: Iterable[np.ndarray]) -> FaceTrackResult:
        """:func:`dpl_assets.nodes.faces.track_faces` with this model."""
        from dpl_assets.nodes.faces import track_faces  # here: faces imports this module

        return track_faces(self, frames)
