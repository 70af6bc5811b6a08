"""Head pose from 68-point landmarks: rotation (yaw, pitch, roll in degrees) and translation.

A perspective-n-point fit (OpenCV ``solvePnP``) of six landmarks to a generic 3D face
(nose tip, chin, outer eye corners, mouth corners; the widely used model from OpenCV head
pose tutorials, in millimetre-like units), with a pinhole camera whose focal length is the
frame width and whose principal point is the frame centre. Euler angles come from
pytorch3d's ``matrix_to_euler_angles`` when it is importable (GPU installs), else from
SciPy's ``Rotation``: both use the same intrinsic X-Y-Z convention here.

Output ``head_pose`` float32 (N, 6): ``[yaw, pitch, roll, tx, ty, tz]``; degrees, and the
translation in the generic model's units (camera frame). NaN where the frame has no face.
Sign conventions (image seen as printed): roll > 0 when the face is turned counter-
clockwise; yaw flips sign when the image is mirrored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

# 68-layout indices and a generic 3D face (x right, y up, z towards the camera).
_PNP_INDICES = [30, 8, 36, 45, 48, 54]
_GENERIC_FACE_3D = np.array(
    [
        (0.0, 0.0, 0.0),  # nose tip
        (0.0, -330.0, -65.0),  # chin
        (-225.0, 170.0, -135.0),  # outer corner of the image-left eye
        (225.0, 170.0, -135.0),  # outer corner of the image-right eye
        (-150.0, -150.0, -125.0),  # image-left mouth corner
        (150.0, -150.0, -125.0),  # image-right mouth corner
    ]
)


@functools.cache
def _pytorch3d_euler() -> Callable[[np.ndarray], np.ndarray] | None:
    """pytorch3d's ``matrix_to_euler_angles`` on numpy (X-Y-Z, radians), None when pytorch3d
    is not importable. Looked up once; torch is loaded only through pytorch3d (without it,
    importing torch would only cost the process ~200 MB)."""
    try:
        from pytorch3d.transforms import matrix_to_euler_angles
    except ImportError:
        return None
    import torch

    return lambda matrix: matrix_to_euler_angles(torch.from_numpy(matrix), "XYZ").numpy()


def _euler_xyz_degrees(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) angles about x (pitch), y (yaw), z (roll) in degrees."""
    euler = _pytorch3d_euler()
    if euler is not None:
        angles = euler(matrix)
    else:
        from scipy.spatial.transform import Rotation

        angles = Rotation.from_matrix(matrix).as_euler("XYZ")
    return np.degrees(angles)


def head_pose(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Per-frame head pose from landmarks (N, 68, 2) in pixels; ``frame_size`` = (width, height).

    Returns float32 (N, 6) ``[yaw, pitch, roll, tx, ty, tz]`` (degrees; model units).
    """
    width, height = frame_size
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)
    # The model's y axis points up, the image's down: flip y so both agree.
    model = _GENERIC_FACE_3D * np.array([1.0, -1.0, -1.0])
    poses = np.full((landmarks.shape[0], 6), np.nan, dtype=np.float32)
    for index, points in enumerate(landmarks):
        image_points = points[_PNP_INDICES].astype(np.float64)
        if not np.isfinite(image_points).all():
            continue
        ok, rotation_vector, translation = cv2.solvePnP(
            model, image_points, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE
        )
        if not ok:
            continue
        matrix, _ = cv2.Rodrigues(rotation_vector)
        pitch, yaw, roll = _euler_xyz_degrees(matrix)
        # Image y points down, so a counter-clockwise turn on screen is a negative z angle.
        poses[index] = [yaw, pitch, -roll, *translation.ravel()]
    return poses


# FLAME's model frame (x to the subject's left = image right, y up, z towards the camera)
# is the generic face's; OpenCV's camera has y down and z away, the flip applied above.
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


def head_pose_angles_from_flame(pose: np.ndarray) -> np.ndarray:
    """FLAME/EMOCA ``pose`` (N, 6) (global axis-angle in radians, then jaw) -> (N, 3)
    ``[yaw, pitch, roll]`` in degrees, in :func:`head_pose`'s convention.

    A head turned by ``R`` in FLAME's frame appears to :func:`head_pose` as ``F R F`` with
    ``F = diag(1, -1, -1)`` (the same y/z flip it applies to its model), decomposed the same
    way: so a FLAME pose and the landmark fit of the same head give the same angles.
    """
    from scipy.spatial.transform import Rotation

    rotations = Rotation.from_rotvec(np.asarray(pose, np.float64)[:, :3]).as_matrix()
    angles = np.array([_euler_xyz_degrees(_FLIP_YZ @ r @ _FLIP_YZ) for r in rotations])
    pitch, yaw, roll = angles.T if len(angles) else np.zeros((3, 0))
    return np.stack([yaw, pitch, -roll], axis=-1).astype(np.float32)
