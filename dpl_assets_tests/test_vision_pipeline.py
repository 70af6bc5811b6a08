"""The vision branch run the way a user runs it: ``dpl run`` on a real face clip."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from skimage.data import astronaut

from dpl_assets import cli
from dpl_assets.media.ffmpeg import ffmpeg_executable
from dpl_assets.nodes.faces import FaceAnalyzer
from dpl_assets.nodes.head_pose import head_pose
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets_tests import media_factory as media

GRAPH = [
    {"name": "VideoToImagesNode", "params": {"fps": 25}},
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "EmocaLikeBboxesNode", "params": {}},
    {"name": "CropNode", "params": {"size_hw": [128, 128]}},
    {"name": "HeadPoseNode", "params": {}},
    {"name": "BlinksNode", "params": {}},
]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Encode RGB frames (piped raw, no temp images) as H.264 in ``path``."""
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg_executable(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
         *media._video_codec_args(), "file:" + str(path.absolute())],
        input=np.stack(frames).tobytes(), check=True,
    )  # fmt: skip
    return path


def moving_astronaut(count: int = 30) -> list[np.ndarray]:
    """A real face photo with slight horizontal motion, 320x320."""
    image = astronaut()
    return [
        np.ascontiguousarray(np.roll(image, int(6 * np.sin(i / 5)), axis=1)[40:360, 100:420])
        for i in range(count)
    ]


def test_face_clip_yields_aligned_crops_pose_and_blinks(tmp_path):
    write_clip(tmp_path / "videos" / "real face.mp4", moving_astronaut())
    media.make_video_only(tmp_path / "videos" / "test pattern.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"

    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip

    report = {v["video_id"]: v for v in json.loads((out / "report.json").read_text())["videos"]}
    assert code == 0
    assert report["test pattern"]["status"] == "rejected"
    assert "no face" in report["test pattern"]["reason"]
    face = report["real face"]
    assert face["status"] == "processed", face
    with ImageStack(Path(face["outputs"]["images"])) as images:
        frame_count = len(images)
    assert frame_count == 30
    landmarks = np.load(face["outputs"]["landmarks"])
    boxes = np.load(face["outputs"]["bboxes"])
    mask = np.load(face["outputs"]["face_mask"])
    assert landmarks.shape == (30, 68, 2) and (mask == 1).all()
    # Every landmark lies inside its frame's crop box.
    assert (landmarks[..., 0] >= boxes[:, None, 0]).all()
    assert (landmarks[..., 0] < boxes[:, None, 2]).all()
    assert (landmarks[..., 1] >= boxes[:, None, 1]).all()
    assert (landmarks[..., 1] < boxes[:, None, 3]).all()
    with ImageStack(Path(face["outputs"]["crops"])) as crops:
        assert len(crops) == frame_count and crops[0].shape == (128, 128, 3)
    assert np.load(face["outputs"]["head_pose"]).shape == (30, 6)
    blinks = np.load(face["outputs"]["blinks"])
    assert blinks.shape == (30, 3) and np.all((blinks > 0.1) & (blinks < 0.6))  # eyes open


def rotate(image: np.ndarray, degrees_ccw: float) -> np.ndarray:
    import cv2

    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees_ccw, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def pose_of(image: np.ndarray) -> np.ndarray:
    with FaceAnalyzer() as analyzer:
        result = analyzer.analyze([image] * 3)
    height, width = image.shape[:2]
    return head_pose(result.landmarks, (width, height))[0]


@pytest.mark.parametrize("angle", [-20, 20])
def test_in_plane_rotation_of_a_real_face_shows_as_roll(angle):
    image = astronaut()
    upright, turned = pose_of(image), pose_of(rotate(image, angle))
    assert turned[2] - upright[2] == pytest.approx(angle, abs=4)


def test_mirroring_a_real_face_flips_the_sign_of_yaw():
    image = np.ascontiguousarray(rotate(astronaut(), 0)[:, 60:])  # off-centre: a clear yaw
    yaw, mirrored_yaw = pose_of(image)[0], pose_of(np.ascontiguousarray(image[:, ::-1]))[0]
    assert abs(yaw) > 2 and abs(mirrored_yaw) > 2
    assert np.sign(mirrored_yaw) == -np.sign(yaw)
    # The mesh is not exactly mirror-symmetric: measured |yaw + mirrored| ~3 degrees.
    assert abs(mirrored_yaw + yaw) < 5
