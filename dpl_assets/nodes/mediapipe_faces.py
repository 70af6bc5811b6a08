"""The default face model: mediapipe's face detector and 478-point mesh, offline, on the CPU.

:class:`FaceAnalyzer` implements :class:`~dpl_assets.nodes.face_model.FaceModel` with the
models bundled in the ``mediapipe`` wheel (legacy ``solutions`` API; the Tasks API's
FaceLandmarker needs a downloaded ``.task`` file):

1. **Detection** of *every* face in a frame: BlazeFace full range
   (``FaceDetection(model_selection=1)``), boxes kept when their score is at least
   ``filter_threshold``, largest first.
2. **Landmarks** for a face: a square crop of :data:`MESH_CROP_SCALE` x the box (padded
   with black where it leaves the frame) goes through the static 478-point ``FaceMesh``
   (``refine_landmarks``: iris points included), and the points are mapped back to frame
   pixels. The detector sees the whole frame at 192 px, so a mesh run on the full frame is
   ~12 px off for small faces; on the crop it is not.
3. **Tracking** (``landmark_mode="tracking"`` of :func:`~dpl_assets.nodes.faces.track_faces`,
   the default; detection then runs every few frames): one :class:`MeshTracker` per
   followed face, the tracking-mode ``FaceMesh`` on a crop of the same size that follows
   the face; between detections the face's box moves with its mesh
   (:func:`box_from_mesh`).

Conventions: pixels of the frame given, ``x`` right, ``y`` down, pixel ``(x, y)`` covering
``[x, x+1) x [y, y+1)`` (mediapipe's relative coordinates times the frame size). Boxes are
the detector's (or follow its convention) and may reach past the frame. Mesh ``z`` is
mediapipe's relative depth scaled like ``x`` (pixels; smaller is nearer the camera, origin
near the head's centre).

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

from dpl_assets import collector
from dpl_assets.nodes import native_logs
from dpl_assets.nodes.face_model import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_FILTER_THRESHOLD,
    DEFAULT_LANDMARK_MODE,
    ClosedOnExit,
    FaceLandmarks,
    LandmarkMode,
    as_rgb,
    check_threshold,
    largest_first,
)
from dpl_assets.nodes.mediapipe_graph import image_output

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
# The tracking mesh samples its region of interest from the crop itself: a crop up to this
# side goes in as it is (a 625 -> 512 px resize cost 1.7 ms a frame, the mesh the same).
TRACKING_CROP_MAX_SIDE = 1024
CROP_RECENTRE = 0.1  # a tracker's crop moves when the face is this x its box side off (see there)
BOX_SIDE_PER_FACE_LENGTH = 1.03  # detector box side / mesh extent down the face (measured)
BOX_CENTRE_UP = 0.025  # detector box centre above the mesh extent's, x that extent (measured)


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """Mesh points (..., 478, C) -> the 68 iBUG points (..., 68, 2) (x, y only)."""
    return mesh[..., MEDIAPIPE_TO_68, :2]


def square_crop(
    rgb: np.ndarray, x0: int, y0: int, side: int, buffer: np.ndarray | None = None
) -> np.ndarray:
    """The ``side`` x ``side`` px window of RGB uint8 (H, W, 3) ``rgb`` whose top-left pixel
    is ``(x0, y0)``, black where it leaves the frame: uint8 (side, side, 3), C-contiguous.

    ``buffer``: a flat uint8 array of at least ``side * side * 3`` elements; the crop is
    then written to its start and returned as a view of it (no new array per frame: a
    crop over 1 MB is mapped and unmapped by glibc each time, see
    :mod:`dpl_assets.memory`). ValueError when it is too small."""
    height, width = rgb.shape[:2]
    inner = rgb[max(y0, 0) : min(y0 + side, height), max(x0, 0) : min(x0 + side, width)]
    if buffer is not None and buffer.size < side * side * 3:
        raise ValueError(f"a {side} px crop needs {side * side * 3} bytes, not {buffer.size}")
    if inner.shape[:2] == (side, side):
        if buffer is None:
            return np.ascontiguousarray(inner)
        crop = buffer[: side * side * 3].reshape(side, side, 3)
        np.copyto(crop, inner)
        return crop
    if buffer is None:
        crop = np.zeros((side, side, 3), dtype=np.uint8)
    else:
        crop = buffer[: side * side * 3].reshape(side, side, 3)
        crop.fill(0)
    top, left = max(-y0, 0), max(-x0, 0)
    crop[top : top + inner.shape[0], left : left + inner.shape[1]] = inner
    return crop


def crop_window(box: np.ndarray) -> tuple[int, int, int]:
    """The mesh's crop around ``box`` ``[x1, y1, x2, y2, ...]`` px: ``(x0, y0, side)`` px of
    the square of :data:`MESH_CROP_SCALE` x the box's longer side around its centre."""
    longer = float(max(box[2] - box[0], box[3] - box[1]))
    side = max(round(MESH_CROP_SCALE * longer), 8)
    x0 = round(float(box[0] + box[2]) / 2 - side / 2)
    y0 = round(float(box[1] + box[3]) / 2 - side / 2)
    return x0, y0, side


def mesh_in_crop(
    mesh_model: Any,
    rgb: np.ndarray,
    window: tuple[int, int, int],
    interpolation: int = cv2.INTER_AREA,
    max_side: int = MESH_CROP_MAX_SIDE,
    buffer: np.ndarray | None = None,
) -> np.ndarray | None:
    """The 478-point mesh float32 (478, 3) px that ``mesh_model`` (a mediapipe ``FaceMesh``)
    finds in the square ``window`` ``(x0, y0, side)`` px (:func:`crop_window`) of RGB uint8
    ``rgb``, or None.

    The crop is black outside the frame and downscaled to ``max_side`` px with the OpenCV
    ``interpolation`` when larger; the points are mapped back to frame pixels, ``z``
    scaled like ``x``. ``buffer``: where to cut the crop (:func:`square_crop`).
    """
    x0, y0, side = window
    crop = square_crop(rgb, x0, y0, side, buffer)
    scale = 1.0
    if side > max_side:
        scale = max_side / side
        crop = cv2.resize(crop, (max_side,) * 2, interpolation=interpolation)
    found = image_output(mesh_model, crop, "multi_face_landmarks")
    if not found:
        return None
    size = crop.shape[0]
    points: np.ndarray = landmark_array(found[0]) * size
    points /= scale
    points[:, 0] += x0
    points[:, 1] += y0
    return points.astype(np.float32)


# A NormalizedLandmark as protobuf writes it when x, y and z alone are set (what the mesh
# gives): field 1 of the list (tag 0x0A), 15 bytes long, then fields 1-3 as fixed32 floats.
_LANDMARK_RECORD = np.dtype(
    [("tag", "u1"), ("size", "u1"), ("x_tag", "u1"), ("x", "<f4"), ("y_tag", "u1"),
     ("y", "<f4"), ("z_tag", "u1"), ("z", "<f4")]
)  # fmt: skip
_LANDMARK_TAGS = {"tag": 0x0A, "size": 15, "x_tag": 0x0D, "y_tag": 0x15, "z_tag": 0x1D}


def landmark_array(landmarks: Any) -> np.ndarray:
    """A mediapipe ``NormalizedLandmarkList`` -> float64 (N, 3): each landmark's ``x, y, z``
    (relative to the image, as mediapipe gives them).

    Read from the list's serialized bytes (protobuf's wire format, which is fixed) when
    every landmark has exactly x, y and z set: 0.02 ms for the 478-point mesh against
    0.2 ms reading the points one attribute at a time (~5 % of the face stage per frame),
    the same values. Any other list (visibility or presence set, a field missing) is read
    point by point.
    """
    raw = landmarks.SerializeToString()
    if len(raw) == len(landmarks.landmark) * _LANDMARK_RECORD.itemsize:
        records = np.frombuffer(raw, _LANDMARK_RECORD)
        if all((records[name] == value).all() for name, value in _LANDMARK_TAGS.items()):
            return np.stack((records["x"], records["y"], records["z"]), axis=1).astype(np.float64)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], np.float64)


def box_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """The detector's box float32 (4,) ``[x1, y1, x2, y2]`` px predicted from a face's
    478-point mesh (478, 2|3) px (how boxes move between detections in tracking mode).

    The mesh is measured along the face's own axes (down = eye centre to mouth centre of
    the 68 points, so a rolled head gives the same box as an upright one): the box is a
    square of :data:`BOX_SIDE_PER_FACE_LENGTH` x the mesh's extent along that axis,
    centred on the extent's centre moved :data:`BOX_CENTRE_UP` x that extent towards the
    forehead. Both constants are the mean detector box / mesh ratios measured on the
    benchmark clips (two faces, upright and rolled +-12..25 degrees; side ratio 1.03 +-
    0.02 upright, 0.99 +- 0.05 rolled), so a predicted box has about the detector's size
    and place (on the test photo: within 5 % of the side upright, 13 % rolled 20 degrees;
    tracking uses how it moves and scales, not where it is, see ``faces``).
    """
    points = mesh[:, :2].astype(np.float64)
    ibug = points[list(MEDIAPIPE_TO_68)]
    down = ibug[48:68].mean(axis=0) - ibug[36:48].mean(axis=0)
    down /= max(float(np.linalg.norm(down)), 1e-9)
    right = np.array([down[1], -down[0]])
    across, along = points @ right, points @ down
    length = float(along.max() - along.min())
    centre_along = (along.max() + along.min()) / 2 - BOX_CENTRE_UP * length
    centre = (across.max() + across.min()) / 2 * right + centre_along * down
    half = BOX_SIDE_PER_FACE_LENGTH * length / 2
    return np.array([*(centre - half), *(centre + half)], np.float32)


def import_mediapipe() -> Any:
    """The ``mediapipe`` module, imported in a thread of its own with the garbage collector
    paused (:func:`dpl_assets.collector.import_modules`; a model is made a few times per
    step: the thread costs nothing beside it).

    mediapipe's import keeps an exception for good (``audio_record.py``'s ``sd_error``,
    "PortAudio library not found" where PortAudio is missing) whose traceback holds the
    importing call stack: every function on it would keep, for the rest of the process,
    the locals it held when it returned (a face step's whole output: ~600 MB for a 60-min
    clip). A thread's own stack has only the thread's frames.
    """
    return collector.import_modules(["mediapipe"])[0]


class MeshTracker(ClosedOnExit):
    """One face's tracking-mode mesh: ``FaceMesh(static_image_mode=False)`` on a square crop
    of :data:`MESH_CROP_SCALE` x the face's box (:func:`mesh_in_crop`).

    In tracking mode mediapipe runs its own detector on the first crop (and again when it
    loses the face) and otherwise places the mesh from the previous call's points: the
    mesh model alone, about half the static mesh's cost. The crop follows the face
    lazily: it stays where it is while the box given stays within :data:`CROP_RECENTRE`
    x its side of the crop's centre and size, so the tracking mesh sees a still image
    region between moves, as on a whole frame (a crop moved every frame, resampled at a
    new phase each time, jittered 1.6x more on the benchmark clips). Crops larger than
    ``max_side`` (:data:`TRACKING_CROP_MAX_SIDE`) are downscaled with ``interpolation``
    (bilinear by default); smaller ones go in unscaled, since the mesh resamples its
    region itself: on the benchmark clips (crops of 620-880 px) that made the face
    stage ~13 % cheaper than downscaling to :data:`MESH_CROP_MAX_SIDE` as the static
    path does (7.5 vs 8.6 ms a frame), landmarks 1.50 vs 1.48 px from the static ones,
    jitter 0.48 vs 0.46 px, the same faces and identities.
    One tracker per face: calls must be that face's frames in order. Created by
    :meth:`FaceAnalyzer.landmark_tracker`; :meth:`close` frees the graph.
    """

    def __init__(
        self, interpolation: int = cv2.INTER_LINEAR, max_side: int = TRACKING_CROP_MAX_SIDE
    ) -> None:
        mp = import_mediapipe()
        self.interpolation = interpolation
        self.max_side = max_side
        self.window: tuple[int, int, int] | None = None
        self._crop_buffer = np.empty(0, np.uint8)  # reused frame after frame
        native_logs.acquire()  # its C++ start-up lines: see native_logs
        try:
            self._mesh: Any = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True
            )
        except BaseException:
            native_logs.release()
            raise

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """The mesh (478, 3) px and 68 points (68, 2) px of the face in ``box``, or None
        (face lost). ValueError for a frame that is not RGB uint8, RuntimeError after
        :meth:`close`."""
        if self._mesh is None:
            raise RuntimeError("the mesh tracker is closed")
        rgb = as_rgb(rgb)
        self.window = self._window_for(box)
        needed = self.window[2] ** 2 * 3
        if self._crop_buffer.size < needed:  # room for crops up to 1.2x this side
            self._crop_buffer = np.empty(int(needed * 1.44), np.uint8)
        mesh = mesh_in_crop(
            self._mesh, rgb, self.window, self.interpolation, self.max_side, self._crop_buffer
        )
        return None if mesh is None else FaceLandmarks(mesh_to_68(mesh).copy(), mesh)

    def _window_for(self, box: np.ndarray) -> tuple[int, int, int]:
        """The crop for ``box``: the current one unless the box's centre is more than
        :data:`CROP_RECENTRE` x its longer side from the crop's centre or the crop's side
        is off by more than that fraction; then the crop around ``box``."""
        if self.window is None:
            return crop_window(box)
        x0, y0, side = self.window
        longer = float(max(box[2] - box[0], box[3] - box[1]))
        off_centre = max(
            abs(float(box[0] + box[2]) / 2 - (x0 + side / 2)),
            abs(float(box[1] + box[3]) / 2 - (y0 + side / 2)),
        )
        resized = abs(MESH_CROP_SCALE * longer / side - 1)
        if off_centre > CROP_RECENTRE * longer or resized > CROP_RECENTRE:
            return crop_window(box)
        return self.window

    def close(self) -> None:
        """Free the mediapipe graph (idempotent)."""
        if self._mesh is not None:
            try:
                self._mesh.close()
            finally:
                self._mesh = None
                native_logs.release()


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
            mp = import_mediapipe()
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
        found = image_output(detector, rgb, "detections") or []
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

        The static mesh (its own detector on every call) on the crop of
        :func:`mesh_in_crop`. ValueError for a frame that is not RGB uint8.
        """
        _, mesh_model = self._models()
        return mesh_in_crop(mesh_model, as_rgb(rgb), crop_window(box))

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        """The mesh (478, 3) px of the face in ``box`` and its 68 points (68, 2) px, or None."""
        mesh = self.mesh(rgb, box)
        return None if mesh is None else FaceLandmarks(mesh_to_68(mesh).copy(), mesh)

    def landmark_tracker(self) -> MeshTracker:
        """A new tracking-mode mesh for one face (close it when the face's track ends)."""
        return MeshTracker()

    def predict_box(self, landmarks: FaceLandmarks) -> np.ndarray | None:
        """The detector's box float32 (4,) ``[x1, y1, x2, y2]`` px for the face whose
        ``landmarks`` these are (:func:`box_from_mesh`); None without a mesh."""
        return None if landmarks.mesh is None else box_from_mesh(landmarks.mesh)

    # -- a clip --------------------------------------------------------------------------

    def analyze(
        self,
        frames: Iterable[np.ndarray],
        landmark_mode: LandmarkMode = DEFAULT_LANDMARK_MODE,
        detect_every: int = DEFAULT_DETECT_EVERY,
    ) -> FaceTrackResult:
        """:func:`dpl_assets.nodes.faces.track_faces` with this model."""
        from dpl_assets.nodes.faces import track_faces  # here: faces imports this module

        return track_faces(self, frames, landmark_mode, detect_every)
