"""Head pose: known rotations of a face geometry are recovered; mirroring flips yaw."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dpl_assets.nodes.head_pose import head_pose

WIDTH, HEIGHT = 640, 480
# Six facial points (nose tip, chin, outer eye corners, mouth corners) of an average adult
# face in millimetres (x right, y down, z away from the camera), independent of the
# module's own model so the fit is tested on geometry it was not given.
FACE_MM = np.array(
    [(0, 0, 0), (0, 66, 14), (-44, -34, 27), (44, -34, 27), (-29, 30, 24), (29, 30, 24)], float
)
INDICES = [30, 8, 36, 45, 48, 54]


def project(yaw: float, pitch: float, roll_ccw: float, distance_mm: float = 600.0) -> np.ndarray:
    """Landmarks (1, 68, 2) of the face turned by the given angles (degrees), NaN elsewhere."""
    # Image y points down: a counter-clockwise turn on screen is a negative angle about z.
    rotation = Rotation.from_euler("XYZ", [pitch, yaw, -roll_ccw], degrees=True).as_matrix()
    camera_points = FACE_MM @ rotation.T + [0, 0, distance_mm]
    focal = WIDTH
    pixels = focal * camera_points[:, :2] / camera_points[:, 2:] + [WIDTH / 2, HEIGHT / 2]
    landmarks = np.full((1, 68, 2), np.nan)
    landmarks[0, INDICES] = pixels
    return landmarks


@pytest.mark.parametrize("roll", [-30, -10, 10, 30])
def test_in_plane_rotation_is_recovered_as_roll(roll):
    yaw, pitch, recovered_roll = head_pose(project(0, 0, roll), (WIDTH, HEIGHT))[0, :3]
    assert recovered_roll == pytest.approx(roll, abs=3)
    assert abs(yaw) < 5 and abs(pitch) < 10


@pytest.mark.parametrize("yaw", [-25, 25])
def test_yaw_has_the_sign_of_the_turn_and_mirroring_flips_it(yaw):
    landmarks = project(yaw, 0, 0)
    estimated = head_pose(landmarks, (WIDTH, HEIGHT))[0, 0]
    mirrored = landmarks.copy()
    mirrored[..., 0] = WIDTH - mirrored[..., 0]
    # Mirroring swaps which eye/mouth corner is on the image left.
    for left, right in [(36, 45), (48, 54)]:
        mirrored[0, [left, right]] = mirrored[0, [right, left]]
    estimated_mirror = head_pose(mirrored, (WIDTH, HEIGHT))[0, 0]
    assert np.sign(estimated) == np.sign(yaw) and abs(estimated) > 10
    assert estimated_mirror == pytest.approx(-estimated, abs=2)


def test_frames_without_landmarks_give_nan():
    landmarks = np.full((2, 68, 2), np.nan)
    landmarks[1] = project(0, 0, 0)[0]
    poses = head_pose(landmarks, (WIDTH, HEIGHT))
    assert poses.shape == (2, 6) and poses.dtype == np.float32
    assert np.isnan(poses[0]).all() and np.isfinite(poses[1]).all()


@pytest.mark.parametrize(
    "rotvec",
    [(0.0, 0.35, 0.0), (0.3, 0.0, 0.0), (0.0, 0.0, 0.4), (0.2, -0.3, 0.15), (-0.25, 0.2, -0.3)],
)
def test_flame_pose_and_the_landmark_fit_of_the_same_head_agree(rotvec):
    """A face turned by a FLAME rotation, photographed by a pinhole camera, is fitted by
    head_pose to the angles head_pose_angles_from_flame gives for that rotation."""
    from scipy.spatial.transform import Rotation

    from dpl_assets.nodes.head_pose import (
        _GENERIC_FACE_3D,
        _PNP_INDICES,
        head_pose,
        head_pose_angles_from_flame,
    )

    width, height, distance = 640, 480, 4000.0
    # The generic face in FLAME's frame (x image right, y up, z towards the camera), turned.
    turned = Rotation.from_rotvec(rotvec).apply(_GENERIC_FACE_3D)
    # Camera on the +z axis looking back at the face: image x right, image y down.
    depth = distance - turned[:, 2]
    u = width / 2 + width * turned[:, 0] / depth
    v = height / 2 - width * turned[:, 1] / depth
    landmarks = np.full((1, 68, 2), np.nan, np.float32)
    landmarks[0, _PNP_INDICES] = np.stack([u, v], axis=1)

    fitted = head_pose(landmarks, (width, height))[0, :3]
    expected = head_pose_angles_from_flame(np.array([[*rotvec, 0, 0, 0]]))[0]
    np.testing.assert_allclose(fitted, expected, atol=1.0)
