"""Aligned crops: the similarity fit and point mapping on synthetic points, the warp's
pixel convention, and ``dpl run`` on a real face moved by known similarity transforms
(its aligned crops put the eyes, nose and mouth on the template within 2 px)."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pydantic
import pytest

from dpl_assets.assets.aligned_crops import AlignedCropConfig
from dpl_assets.nodes.aligned_crops import (
    ARCFACE_TEMPLATE,
    FIVE_POINT_INDICES,
    alignment_affines,
    five_points,
    similarity_affine,
    smooth_points,
    template_points,
    to_crop,
    to_frame,
    warp_aligned,
)
from dpl_assets.nodes.frame_quality import FRAME_QUALITY_COLUMNS, QualityThresholds, passing_frames
from dpl_assets.nodes.mediapipe_faces import FaceAnalyzer
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets_tests import similarity_clip
from dpl_assets_tests.dpl_runs import run_graph
from dpl_assets_tests.test_vision_pipeline import write_clip

RNG = np.random.default_rng(15)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    turn = np.radians(angle_deg)
    linear = scale * np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return np.hstack([linear, np.array(shift)[:, None]])


def landmarks_at(points5: np.ndarray) -> np.ndarray:
    """68 landmarks (..., 68, 2) whose five template points are ``points5`` (..., 5, 2):
    each group's points spread symmetrically around its point."""
    landmarks = np.zeros((*points5.shape[:-2], 68, 2))
    for point, group in zip(np.moveaxis(points5, -2, 0), FIVE_POINT_INDICES, strict=True):
        offsets = RNG.normal(size=(len(group), 2))
        offsets -= offsets.mean(axis=0)
        landmarks[..., list(group), :] = point[..., None, :] + offsets
    return landmarks


def test_a_known_similarity_is_recovered_exactly():
    target = template_points("arcface", 112)
    for angle, scale, shift in [(0, 1, (0, 0)), (17, 0.4, (-30, 12.5)), (-160, 2.5, (7, -90))]:
        crop_from_frame = similarity(angle, scale, shift)
        frame_points = to_frame(target[None], crop_from_frame[None])[0]
        assert similarity_affine(frame_points, target) == pytest.approx(crop_from_frame, abs=1e-9)
        affines = alignment_affines(landmarks_at(frame_points[None]), "arcface", 112)
        assert affines[0] == pytest.approx(crop_from_frame, abs=1e-9)
        assert to_crop(frame_points, affines[0]) == pytest.approx(target, abs=1e-9)


def test_the_fit_is_least_squares_when_points_do_not_fit():
    target = template_points("arcface", 100)
    source = target + RNG.normal(scale=3, size=target.shape)
    affine = similarity_affine(source, target)
    residual = np.sum((to_crop(source, affine) - target) ** 2)
    for delta in np.eye(4) * 1e-3:  # any small change of (a, b, tx, ty) fits worse
        a, b = affine[0, 0] + delta[0], affine[1, 0] + delta[1]
        moved = np.array([[a, -b, affine[0, 2] + delta[2]], [b, a, affine[1, 2] + delta[3]]])
        assert np.sum((to_crop(source, moved) - target) ** 2) > residual


def test_five_points_are_eye_centres_nose_tip_and_mouth_corners():
    landmarks = RNG.uniform(0, 100, size=(3, 68, 2))
    points = five_points(landmarks)
    assert points[:, 0] == pytest.approx(landmarks[:, 36:42].mean(axis=1))
    assert points[:, 1] == pytest.approx(landmarks[:, 42:48].mean(axis=1))
    assert points[:, 2:] == pytest.approx(landmarks[:, [30, 48, 54]])


def test_to_crop_and_to_frame_round_trip_per_frame_and_nan_stays_nan():
    affines = np.stack(
        [
            similarity(RNG.uniform(-180, 180), RNG.uniform(0.2, 3), RNG.normal(0, 50, 2))
            for _ in range(4)
        ]
    )
    affines[2] = np.nan
    points = RNG.uniform(-50, 400, size=(4, 68, 2))
    there = to_crop(points, affines)
    back = to_frame(there, affines)
    assert np.isnan(there[2]).all() and np.isnan(back[2]).all()
    keep = [0, 1, 3]
    assert back[keep] == pytest.approx(points[keep], abs=1e-9)
    # Each frame by its own affine, as a direct matrix product.
    direct = points[1] @ affines[1, :, :2].T + affines[1, :, 2]
    assert there[1] == pytest.approx(direct, abs=1e-9)


def test_frames_without_a_face_get_nan_affines():
    landmarks = landmarks_at(np.repeat(template_points("arcface", 50)[None], 3, axis=0))
    landmarks[1] = np.nan
    affines = alignment_affines(landmarks, "arcface", 50)
    assert np.isnan(affines[1]).all() and np.isfinite(affines[[0, 2]]).all()
    assert warp_aligned(np.full((60, 60, 3), 200, np.uint8), affines[1], 50).max() == 0


def test_custom_templates_and_bad_ones():
    unit = ARCFACE_TEMPLATE + 0.01
    assert template_points(unit.tolist(), 200) == pytest.approx(unit * 200)
    for bad in ("ffhq", [[0.5, 0.5]] * 4, [[np.nan, 0.5]] * 5):
        with pytest.raises(ValueError):
            template_points(bad, 100)


def test_a_graph_with_a_bad_template_fails_before_any_work():
    for params in ({"template": "custom"}, {"template": "custom", "custom_points": [[0.5, 0.5]]}):
        with pytest.raises(pydantic.ValidationError, match=r"template|five"):
            AlignedCropConfig(**params)
    assert AlignedCropConfig(template="custom", custom_points=ARCFACE_TEMPLATE.tolist())


def test_smoothing_keeps_linear_motion_and_never_crosses_a_gap():
    frames = np.arange(12, dtype=np.float64)
    points = np.stack([3.0 * frames + 1, -2.0 * frames], axis=-1)[:, None, :]  # (12, 1, 2)
    assert smooth_points(points, 5) == pytest.approx(points)  # constant velocity: unchanged
    jitter = points + RNG.normal(scale=1.0, size=points.shape)
    assert (
        np.abs(smooth_points(jitter, 5) - points)[2:-2].std()
        < 0.75 * np.abs(jitter - points)[2:-2].std()
    )
    gapped = jitter.copy()
    gapped[5] = np.nan
    smoothed = smooth_points(gapped, 5)
    assert np.isnan(smoothed[5]).all()
    changed = gapped.copy()
    changed[6:] += 100.0  # what follows the gap cannot move what precedes it
    assert smooth_points(changed, 5)[:5] == pytest.approx(smoothed[:5])
    # Frame 4 ends its run: only itself (no neighbour on its right before the gap).
    assert smoothed[4] == pytest.approx(gapped[4])
    assert smoothed[2] == pytest.approx(gapped[0:5].mean(axis=0))
    assert smooth_points(gapped, 0) == pytest.approx(gapped, nan_ok=True)


@pytest.mark.parametrize("angle, scale", [(0, 2.0), (30, 1.3), (-75, 0.6), (10, 0.2), (-40, 0.1)])
def test_the_warp_puts_a_frame_point_where_to_crop_says(angle: float, scale: float):
    """A bright square's centroid lands at ``to_crop`` of its centre (pixel-centre
    convention right, also through the pixel-area pre-shrink at scale 0.2)."""
    frame = np.zeros((400, 400, 3), np.uint8)
    frame[180:200, 150:170] = 255  # covers [150, 170) x [180, 200): centre (160, 190)
    centre = np.array([[160.0, 190.0]])
    affine = similarity(angle, scale, (0, 0))
    affine[:, 2] = 32 - to_crop(centre, affine)[0]  # the centre at (32, 32) of a 64 crop
    crop = warp_aligned(frame, affine, 64, "linear")[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:64, :64] + 0.5  # pixel centres, continuous coordinates
    centroid = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    assert centroid == pytest.approx([32.0, 32.0], abs=0.05)
    assert crop.sum() / 255 == pytest.approx(400 * scale**2, rel=0.03)  # area scales by s^2


# --------------------------------------------------------------------------------------
# dpl run on a real face moved by known similarity transforms
# --------------------------------------------------------------------------------------

CROP = 112
FRAMES = 20


@pytest.fixture(scope="module")
def face_template() -> np.ndarray:
    """The photo's own five points placed in the crop as the ArcFace template places them
    (unit coordinates): a template this face fits exactly."""
    with FaceAnalyzer() as analyzer:
        landmarks = analyzer.analyze([similarity_clip.photo()] * 2, "static").landmarks[:1]
    return to_crop(five_points(landmarks), alignment_affines(landmarks, "arcface", 1))[0]


@pytest.fixture(scope="module")
def photo_points() -> np.ndarray:
    """The photo's five points (5, 2) px, found once on the photo itself."""
    with FaceAnalyzer() as analyzer:
        landmarks = analyzer.analyze([similarity_clip.photo()] * 2, "static").landmarks[:1]
    return five_points(landmarks)[0]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, face_template: np.ndarray) -> dict:
    """``dpl run`` of frames, faces, head pose, aligned crops and frame quality on the
    moving face clip (20 frames, 320 x 240); the report's entry of the video."""
    folder = tmp_path_factory.mktemp("aligned")
    write_clip(folder / "videos" / "face.mp4", similarity_clip.clip(FRAMES))
    scales = [np.sqrt(np.linalg.det(t[:, :2])) for t in similarity_clip.clip_transforms(FRAMES)]
    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "FaceAlignmentNode", "params": {"landmark_mode": "static"}},
        {"name": "HeadPoseNode", "params": {}},
        {"name": "AlignedCropNode",
         "params": {"size": CROP, "template": "custom", "custom_points": face_template.tolist(),
                    "smoothing": 3, "output_ext": ".png"}},
        # About the face's size at scale 1 (the clip's scales run 0.8..1.25).
        {"name": "FrameQualityNode", "params": {"min_face_px": MIN_FACE_PX}},
        {"name": "H5DatasetNode", "params": {"datatypes": list(PACKED)}},
    ]  # fmt: skip
    (video,) = run_graph(folder, graph, "videos").values()
    assert video["status"] == "processed", video
    return {"outputs": video["outputs"], "scales": np.array(scales)}


MIN_FACE_PX = 127.0
PACKED = ("aligned_crops", "aligned_affines", "frame_quality", "frame_quality_ok")


def test_aligned_crops_put_the_five_points_on_the_template(
    pipeline_run: dict, face_template: np.ndarray, photo_points: np.ndarray
):
    outputs = pipeline_run["outputs"]
    affines = np.load(outputs["aligned_affines"])
    assert affines.shape == (FRAMES, 2, 3) and affines.dtype == np.float32
    target = face_template * CROP
    # The photo's points where the known transforms put them in each frame, mapped by the
    # node's affines: on the template (the face's true geometry, not the detector's).
    known = np.stack([to_crop(photo_points, t) for t in similarity_clip.clip_transforms(FRAMES)])
    mapped = to_crop(known, affines)
    assert np.linalg.norm(mapped - target, axis=-1).max() < 2.0
    # Landmarks found again on the aligned crops themselves are there too.
    with ImageStack(Path(outputs["aligned_crops"])) as stack:
        crops = list(stack)
        assert stack.attrs["frames_without_face"] == 0
        assert np.asarray(stack.attrs["template_px"]) == pytest.approx(target)
    assert len(crops) == FRAMES and crops[0].shape == (CROP, CROP, 3)
    with FaceAnalyzer() as analyzer:
        found = five_points(analyzer.analyze(crops, "static").landmarks)
    assert np.linalg.norm(found - target, axis=-1).max() < 2.0
    # And the frame's landmarks go to the crop and back unchanged.
    landmarks = np.load(outputs["landmarks"])
    assert to_frame(to_crop(landmarks, affines), affines) == pytest.approx(landmarks, abs=1e-3)


def test_frame_quality_of_the_run(pipeline_run: dict):
    outputs, scales = pipeline_run["outputs"], pipeline_run["scales"]
    table = np.load(outputs["frame_quality"])
    ok = np.load(outputs["frame_quality_ok"])
    assert table.shape == (FRAMES, 5) and ok.dtype == np.uint8
    # Face size follows the known scale of each frame (within 3%).
    assert table[:, 1] / scales == pytest.approx(np.median(table[:, 1] / scales), rel=0.03)
    # Yaw and pitch are the head pose node's.
    pose = np.load(outputs["head_pose"])
    assert table[:, 2:4] == pytest.approx(pose[:, :2])
    # Only the size threshold bites here: exactly the frames whose face is under it, as
    # the known scales say (frames within 2% of the threshold may go either way).
    passing = passing_frames(table, QualityThresholds(min_face_px=MIN_FACE_PX))
    assert ok.tolist() == passing.astype(np.uint8).tolist()
    expected_px = scales * np.median(table[:, 1] / scales)
    clear = np.abs(expected_px / MIN_FACE_PX - 1) > 0.02
    assert clear.sum() >= FRAMES - 2
    assert (ok[clear] == 1).tolist() == (expected_px[clear] >= MIN_FACE_PX).tolist()
    assert 0 < ok.sum() < FRAMES


@pytest.mark.parametrize("scale", [1.5, 0.3])
def test_a_crop_past_the_frame_edge_is_black_exactly_outside_it(scale: float):
    frame = np.full((300, 400, 3), 200, np.uint8)
    affine = similarity(20, scale, (0, 0))
    affine[:, 2] = 32 - to_crop(np.array([[0.0, 150.0]]), affine)[0]  # the left edge mid-crop
    crop = warp_aligned(frame, affine, 64, "linear")[..., 0]
    centres = np.stack(np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5), -1).reshape(-1, 2)
    x_in_frame = to_frame(centres, affine)[:, 0].reshape(64, 64)
    margin = 1.5 / scale  # a kernel's reach, in frame px
    assert (crop[x_in_frame > margin] == 200).all()
    assert (crop[x_in_frame < -margin] == 0).all()
    assert (crop[x_in_frame < -margin]).size > 500 and (crop[x_in_frame > margin]).size > 500


def test_the_training_file_holds_both_nodes_outputs_with_named_columns(pipeline_run: dict):
    outputs = pipeline_run["outputs"]
    with h5py.File(outputs["h5_dataset"], "r") as packed:
        assert packed["aligned_affines"][:] == pytest.approx(np.load(outputs["aligned_affines"]))
        assert (
            packed["frame_quality_ok"][:].tolist() == np.load(outputs["frame_quality_ok"]).tolist()
        )
        table = packed["frame_quality"]
        assert list(table.attrs["columns"]) == list(FRAME_QUALITY_COLUMNS)
        assert table.shape == (FRAMES, len(FRAME_QUALITY_COLUMNS))
        assert len(packed["aligned_crops"]) == FRAMES


def test_a_strong_shrink_averages_fine_detail_instead_of_aliasing():
    """A 1-px checkerboard shrunk 5x is mid grey; a bare warpAffine samples it (aliases)."""
    ys, xs = np.mgrid[:400, :400]
    frame = np.repeat((((xs + ys) % 2) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    affine = similarity(13, 0.2, (0, 0))
    affine[:, 2] = 32 - to_crop(np.array([[200.0, 200.0]]), affine)[0]  # inside the frame
    crop = warp_aligned(frame, affine, 64, "linear")[..., 0].astype(np.float64)
    bare = cv2.warpAffine(frame, affine, (64, 64), flags=cv2.INTER_LINEAR)[..., 0]
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 3
    assert bare.std() > 20
