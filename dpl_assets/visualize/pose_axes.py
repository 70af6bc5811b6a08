"""Head-pose axes in pixels: the geometry of :mod:`dpl_assets.nodes.head_pose`, inverted.

Head-pose axes follow :mod:`dpl_assets.nodes.head_pose` exactly: a pinhole camera with focal
length = frame width and principal point = frame centre, and the rotation
``R = Rx(pitch) @ Ry(yaw) @ Rz(-roll)`` (intrinsic X-Y-Z; roll is stored negated because the
image's y points down) taking the model frame (the generic face with y and z flipped: x
right, y down, z into the head) to the camera frame. :func:`rotation_matrix` is the inverse
of head_pose's matrix-to-angles conversion. The axes are the generic face's own: x towards
the image-right of a frontal face, y up, z out of the face towards the camera.

A ``head_pose`` row is (6,): ``[yaw, pitch, roll]`` degrees and ``[tx, ty, tz]``, the
camera-frame translation in the generic face model's units.
"""

from __future__ import annotations

import numpy as np

AXIS_LENGTH_MODEL = 200.0
"""Length of the drawn axes in generic-model units (the outer eye corners are 450 apart)."""

# Axis end points in head_pose's model frame (y down, z into the head) for the generic
# face's x right, y up, z towards the camera.
_AXIS_DIRECTIONS = np.array([[0.0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, -1]])


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
    """(3, 3) intrinsics of ``head_pose`` for a (width, height) px frame: focal = width px,
    principal point = centre."""
    width, height = frame_size
    return np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float64)


def project(points_camera: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Camera-frame points (K, 3) (model units) -> pixels (K, 2) with :func:`camera_matrix`."""
    homogeneous = points_camera @ camera_matrix(frame_size).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


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
    None when the angles are NaN, or neither translation nor anchor is usable. ValueError
    when ``head_pose`` is not (6,).
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
