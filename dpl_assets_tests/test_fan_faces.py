"""The optional face-alignment backend (S3FD + FAN), on stand-in weights built here.

No real weights exist on this machine: the tests save randomly initialised networks of the
library's own classes under a temporary ``TORCH_HOME`` in the file names it looks for. The
reference is the ``face-alignment`` package called directly with the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dpl_assets import cli
from dpl_assets.media.frames import decode_frames
from dpl_assets.nodes.faces import landmarks_in_boxes, plausible_landmarks
from dpl_assets.nodes.fan_faces import (
    FAN_WEIGHTS,
    NO_DOWNLOADS_ENV,
    S3FD_WEIGHTS,
    FanFaceModel,
    weights_dir,
)
from dpl_assets.nodes.wav2vec import ModelLoadError
from dpl_assets.outcomes import InputRejected
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, write_clip

face_alignment = pytest.importorskip("face_alignment")

# The astronaut's face in the 320 x 320 window of moving_astronaut (photo x 100.., y 40..).
FACE_BOX = np.array([70.0, 35.0, 180.0, 150.0, 1.0], np.float32)


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding random S3FD and FAN-4 weights in the library's file names."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), folder / S3FD_WEIGHTS)
    torch.save(FAN(4).state_dict(), folder / FAN_WEIGHTS)
    return home


@pytest.fixture
def stand_in_weights(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv(NO_DOWNLOADS_ENV, "1")
    assert weights_dir() == torch_home / "hub" / "checkpoints"
    return torch_home


def direct_library(threshold: float):
    """face-alignment configured as the backend configures it, from the same files."""
    return face_alignment.FaceAlignment(
        face_alignment.LandmarksType.TWO_D,
        device="cpu",
        face_detector="sfd",
        face_detector_kwargs={
            "filter_threshold": threshold,
            "path_to_detector": str(weights_dir() / S3FD_WEIGHTS),
        },
        compile=False,
    )


def test_detections_and_landmarks_equal_the_library_called_directly(stand_in_weights):
    frame = moving_astronaut(1)[0][:160, :200].copy()  # small: S3FD runs at full size
    direct = direct_library(0.0)
    with FanFaceModel(filter_threshold=0.0) as ours:
        found = ours.detect(frame)
        expected = direct.face_detector.detect_from_image(frame.copy())
        assert len(found) == len(expected) > 0
        areas = [float((b[2] - b[0]) * (b[3] - b[1])) for b, _ in found]
        assert areas == sorted(areas, reverse=True)
        reference = np.asarray(expected, np.float64)[:, :5]
        for box, _ in found:  # the same boxes (float32 here), in another order
            assert np.isclose(reference, box, atol=1e-3).all(axis=1).any(), box
        assert all(keypoints is None for _, keypoints in found)

        landmarks = ours.landmarks(frame, FACE_BOX)
        points = direct.get_landmarks_from_image(frame, detected_faces=[FACE_BOX])[0]
    assert landmarks is not None and landmarks.mesh is None
    assert landmarks.points.shape == (68, 2) and landmarks.points.dtype == np.float32
    np.testing.assert_allclose(landmarks.points, points, atol=1e-4)


def test_the_node_runs_the_backend_in_given_boxes(stand_in_weights, tmp_path: Path):
    """FaceLandmarksNode with ``backend: face_alignment`` and a ``raw_bboxes`` input root."""
    frames = moving_astronaut(6)
    write_clip(tmp_path / "videos" / "talk.mp4", frames)
    boxes = np.repeat(FACE_BOX[None], len(frames), axis=0)
    boxes[2] = np.nan  # no face given for frame 2
    (tmp_path / "boxes").mkdir()
    np.save(tmp_path / "boxes" / "talk.npy", boxes)
    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {
            "name": "FaceLandmarksNode",
            "params": {"backend": "face_alignment", "max_gap_frames": 0, "min_face_coverage": 0},
        },
    ]
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    inputs = {"video": "videos", "raw_bboxes": "boxes"}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    out = tmp_path / "out"

    code = cli.main(["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                     str(tmp_path / "inputs.json"), "--output_dir", str(out)])  # fmt: skip

    assert code == 0
    [video] = json.loads((out / "report.json").read_text())["videos"]
    # The reference: the library on each decoded frame, in the given box.
    direct = direct_library(0.5)
    # The frames the node sees: the video decoded again by the images stack's recipe.
    decoded = [frame.rgb for frame in decode_frames(tmp_path / "videos" / "talk.mp4")]
    expected = np.full((len(frames), 68, 2), np.nan, np.float32)
    for index, frame in enumerate(decoded):
        if index != 2:
            points = direct.get_landmarks_from_image(frame, detected_faces=[FACE_BOX])[0]
            if plausible_landmarks(points, FACE_BOX):
                expected[index] = points
    plausible = np.isfinite(expected[:, 0, 0])
    print("frames with plausible stand-in landmarks:", plausible.sum())
    if plausible.sum() * 2 < len(frames) - 1:  # random weights: points may not look like a face
        assert video["status"] == "rejected" and "implausible" in video["reason"]
        return
    assert video["status"] == "processed", video
    np.testing.assert_allclose(np.load(out / "landmarks" / "talk.npy"), expected, atol=1e-3)
    np.testing.assert_array_equal(np.load(out / "face_mask" / "talk.npy"), plausible)
    faces = json.loads((out / "faces" / "talk.json").read_text())
    assert faces["backend"] == "face_alignment" and faces["bboxes"] == "given"
    assert np.isnan(np.load(out / "landmarks_mesh" / "talk.npy")).all()  # FAN has no mesh


def test_given_boxes_must_cover_every_frame(stand_in_weights):
    frames = moving_astronaut(3)
    message = "given boxes cover 2 frames, the video has 3"
    with FanFaceModel() as model, pytest.raises(InputRejected, match=message):
        landmarks_in_boxes(model, frames, np.repeat(FACE_BOX[None], 2, axis=0))


def test_missing_weights_name_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(NO_DOWNLOADS_ENV, "1")
    with pytest.raises(ModelLoadError, match=f"{S3FD_WEIGHTS}, {FAN_WEIGHTS}"):
        FanFaceModel().detect(np.zeros((64, 64, 3), np.uint8))


def test_corrupt_weights_are_a_clear_error(
    torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    good_detector = torch_home / "hub" / "checkpoints" / S3FD_WEIGHTS
    (folder / S3FD_WEIGHTS).write_bytes(good_detector.read_bytes())
    (folder / FAN_WEIGHTS).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="do not load"):
        FanFaceModel().landmarks(np.zeros((64, 64, 3), np.uint8), FACE_BOX)
