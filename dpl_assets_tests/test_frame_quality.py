"""Frame quality against direct references: OpenCV's Laplacian variance and the mean luma
of the same crops, face size against known scales, thresholds against hand-made tables."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pydantic
import pytest

from dpl_assets.assets.quality import FrameQualityConfig, measure_quality
from dpl_assets.datatypes import get_datatype
from dpl_assets.nodes.aligned_crops import alignment_affines, warp_aligned
from dpl_assets.nodes.frame_quality import (
    FRAME_QUALITY_COLUMNS,
    QualityThresholds,
    passing_frames,
    quality_table,
)
from dpl_assets.nodes.head_pose import head_pose
from dpl_assets.nodes.mediapipe_faces import FaceAnalyzer
from dpl_assets_tests import similarity_clip

SCALES = (0.6, 0.8, 1.0, 1.3, 1.6)


@pytest.fixture(scope="module")
def scaled_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of the photo at :data:`SCALES` (turned a little), and their landmarks."""
    frames = [
        similarity_clip.render(similarity_clip.photo_to_frame(4.0 * i, scale, (3 * i, -2)))
        for i, scale in enumerate(SCALES)
    ]
    with FaceAnalyzer() as analyzer:
        landmarks = analyzer.analyze(frames, "static").landmarks
    assert np.isfinite(landmarks).all()
    return frames, landmarks


def no_pose(count: int) -> np.ndarray:
    return np.zeros((count, 2))


def test_the_registry_names_the_columns_readers_see():
    assert get_datatype("frame_quality").columns == FRAME_QUALITY_COLUMNS


def test_sharpness_and_brightness_are_opencvs_on_the_same_crop(scaled_clip):
    frames, landmarks = scaled_clip
    table = quality_table(frames, landmarks, no_pose(len(frames)), crop_size=112)
    assert table.dtype == np.float32 and table.shape == (len(frames), len(FRAME_QUALITY_COLUMNS))
    affines = alignment_affines(landmarks, "arcface", 112)
    for frame, affine, row in zip(frames, affines, table, strict=True):
        grey = cv2.cvtColor(warp_aligned(frame, affine, 112, "linear"), cv2.COLOR_RGB2GRAY)
        assert row[0] == pytest.approx(cv2.Laplacian(grey, cv2.CV_64F).var(), rel=1e-6)
        assert row[4] == pytest.approx(grey.mean(), rel=1e-6)
        rgb = warp_aligned(frame, affine, 112, "linear").astype(np.float64)
        luma = rgb @ [0.299, 0.587, 0.114]  # ITU-R BT.601
        assert row[4] == pytest.approx(luma.mean(), abs=0.5)  # cv2 rounds to uint8


def test_a_blurred_clip_is_less_sharp_and_as_bright(scaled_clip):
    frames, landmarks = scaled_clip
    blurred = [cv2.GaussianBlur(frame, (0, 0), 2.0) for frame in frames]
    sharp = quality_table(frames, landmarks, no_pose(len(frames)))
    soft = quality_table(blurred, landmarks, no_pose(len(frames)))
    assert (soft[:, 0] < 0.5 * sharp[:, 0]).all()
    assert soft[:, 4] == pytest.approx(sharp[:, 4], abs=2.0)
    assert soft[:, 1:4] == pytest.approx(sharp[:, 1:4])  # same landmarks: same geometry


def test_face_size_follows_the_known_scale(scaled_clip):
    frames, landmarks = scaled_clip
    face_px = quality_table(frames, landmarks, no_pose(len(frames)))[:, 1]
    per_unit_scale = face_px / np.array(SCALES)
    assert per_unit_scale == pytest.approx(np.median(per_unit_scale), rel=0.03)


def test_frames_without_a_face_are_nan_rows_and_fail(scaled_clip):
    frames, landmarks = scaled_clip
    landmarks = landmarks.copy()
    landmarks[2] = np.nan
    table = quality_table(frames, landmarks, no_pose(len(frames)))
    assert np.isnan(table[2]).all() and np.isfinite(table[[0, 1, 3, 4]]).all()
    assert not passing_frames(table, QualityThresholds())[2]
    with pytest.raises(ValueError, match="4 frames but 5"):
        quality_table(frames[:4], landmarks, no_pose(len(frames)))


def test_thresholds_flag_exactly_the_frames_beyond_them():
    table = np.array(
        [
            # sharpness, face_px, yaw, pitch, brightness
            [100, 200, 0, 0, 120],  # passes
            [19.9, 200, 0, 0, 120],  # blurry
            [100, 63, 0, 0, 120],  # small
            [100, 200, -45.1, 0, 120],  # turned
            [100, 200, 0, 45.1, 120],  # nodding
            [100, 200, 0, 0, 39],  # dark
            [100, 200, 0, 0, 221],  # bright
            [20, 64, 45, -45, 40],  # on every bound: passes (bounds are inclusive)
            [np.nan] * 5,  # no face
        ],
        np.float32,
    )
    config = FrameQualityConfig()
    fields = QualityThresholds.__dataclass_fields__
    thresholds = QualityThresholds(**config.model_dump(include=set(fields)))
    assert passing_frames(table, thresholds).tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0]
    # No thresholds: every frame with a face passes.
    assert passing_frames(table, QualityThresholds()).tolist() == [1] * 8 + [0]


def test_a_brightness_range_upside_down_is_refused():
    with pytest.raises(pydantic.ValidationError, match="above max_brightness"):
        FrameQualityConfig(min_brightness=200, max_brightness=100)


class FakeIO:
    """The parts of a VideoIO the quality node reads: landmarks, images (size attrs and
    frames), and no head_pose."""

    def __init__(self, frames: list[np.ndarray], landmarks: np.ndarray):
        height, width = frames[0].shape[:2]
        self._frames = frames
        self._inputs = {
            "landmarks": landmarks,
            "images": SimpleNamespace(attrs={"width": width, "height": height}),
        }

    def __getitem__(self, key: str) -> Any:
        return self._inputs[key]

    def optional(self, key: str) -> None:
        assert key == "head_pose"
        return None

    @contextlib.contextmanager
    def frames(self, key: str) -> Iterator[Iterator[np.ndarray]]:
        yield iter(self._frames)


def test_without_head_pose_the_node_fits_the_pose_itself(scaled_clip):
    frames, landmarks = scaled_clip
    config = FrameQualityConfig(min_face_px=0.9 * 127)
    outputs = measure_quality(FakeIO(frames, landmarks), config)  # type: ignore[arg-type]
    height, width = frames[0].shape[:2]
    pose = head_pose(landmarks, (width, height))
    assert outputs["frame_quality"][:, 2:4] == pytest.approx(pose[:, :2])
    assert outputs["frame_quality_ok"].dtype == np.uint8
    assert outputs["frame_quality_ok"].tolist() == [0, 0, 1, 1, 1]  # scales 0.6, 0.8 too small
