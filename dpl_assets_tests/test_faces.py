"""Faces: a real face photo (skimage's astronaut) moved, hidden, doubled and turned over.

References independent of the module: the face's known place in the photo, the geometry
of the clips built here (shifts, pastes, rotations), and mediapipe's FaceMesh called
directly on a whole frame. Clips are numpy frames fed straight to ``analyze`` (fast), plus
one real mp4 decoded by :func:`dpl_assets.media.frames.decode_frames`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pydantic
import pytest

from dpl_assets.assets.faces import FaceAlignmentConfig
from dpl_assets.media.ffmpeg import ffmpeg_executable
from dpl_assets.media.frames import decode_frames
from dpl_assets.nodes.face_model import DEFAULT_DETECT_EVERY, FaceLandmarks, FaceModel, as_rgb
from dpl_assets.nodes.face_tracking import (
    FaceInFrame,
    FaceTrack,
    FaceTrackResult,
    check_coverage,
    fill_gaps,
    link_faces,
    main_track,
)
from dpl_assets.nodes.faces import (
    MAX_FACES_PER_FRAME,
    _assemble,
    landmarks_in_boxes,
    plausible_landmarks,
    track_faces,
)
from dpl_assets.nodes.mediapipe_faces import (
    MEDIAPIPE_TO_68,
    FaceAnalyzer,
    MeshTracker,
    box_from_mesh,
    landmark_array,
    mesh_to_68,
    square_crop,
)
from dpl_assets.outcomes import InputRejected
from dpl_assets_tests import media_factory as media

skimage_data = pytest.importorskip("skimage.data")

WIDTH, HEIGHT = 480, 360
# The astronaut's face in the 512 x 512 photo: x 178..273, y 83..178 (pixels).
FACE_CENTRE = np.array([225.5, 130.5])
GRAY = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)


@functools.cache
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage_data.astronaut())


def window_origin(index: int) -> tuple[int, int]:
    """Top-left (x, y) in the photo of frame ``index``'s window: a slow drift right/down."""
    return 10 + index, 8 + index % 5


def moving_clip(count: int) -> list[np.ndarray]:
    """``count`` frames of WIDTH x HEIGHT cut from the photo by a window that drifts."""
    photo = astronaut()
    frames = []
    for index in range(count):
        x0, y0 = window_origin(index)
        frames.append(np.ascontiguousarray(photo[y0 : y0 + HEIGHT, x0 : x0 + WIDTH]))
        assert frames[-1].shape == (HEIGHT, WIDTH, 3), "the window left the photo"
    return frames


def face_patch(scale: float) -> np.ndarray:
    """The face with some hair and shoulders (photo x 140..310, y 40..230), resized."""
    patch = astronaut()[40:230, 140:310]
    size = (round(patch.shape[1] * scale), round(patch.shape[0] * scale))
    return cv2.resize(patch, size, interpolation=cv2.INTER_AREA)


def paste(canvas: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    canvas[y : y + patch.shape[0], x : x + patch.shape[1]] = patch


def colour_bars() -> np.ndarray:
    colours = np.array(
        [[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0], [192, 0, 192],
         [192, 0, 0], [0, 0, 192], [16, 16, 16]], np.uint8,
    )  # fmt: skip
    columns = np.arange(WIDTH) * len(colours) // WIDTH
    return np.ascontiguousarray(np.broadcast_to(colours[columns], (HEIGHT, WIDTH, 3)))


@pytest.fixture(scope="module")
def analyzer() -> Iterator[FaceAnalyzer]:
    with FaceAnalyzer() as shared:
        yield shared


@pytest.fixture(scope="module")
def moving_result(analyzer: FaceAnalyzer) -> FaceTrackResult:
    return analyzer.analyze(iter(moving_clip(20)))  # tracking mode, the default


@pytest.fixture(scope="module")
def static_result(analyzer: FaceAnalyzer) -> FaceTrackResult:
    return analyzer.analyze(iter(moving_clip(20)), landmark_mode="static")


# --------------------------------------------------------------------------------------
# One face, every frame
# --------------------------------------------------------------------------------------


def test_every_frame_has_the_face_box_68_points_and_mesh(moving_result: FaceTrackResult):
    result = moving_result
    n = 20
    assert result.raw_bboxes.shape == (n, 5) and result.raw_bboxes.dtype == np.float32
    assert result.landmarks.shape == (n, 68, 2) and result.landmarks.dtype == np.float32
    assert result.landmarks_mesh.shape == (n, 478, 3)
    assert result.landmarks_mesh.dtype == np.float32
    assert result.detected.all() and result.valid.all()
    assert np.isfinite(result.raw_bboxes).all() and np.isfinite(result.landmarks_mesh).all()

    boxes = result.raw_bboxes
    size = (boxes[:, 2:4] - boxes[:, 0:2])[:, None, :]
    margin = 0.1 * size
    assert (result.landmarks >= boxes[:, None, 0:2] - margin).all()
    assert (result.landmarks <= boxes[:, None, 2:4] + margin).all()
    assert (boxes[:, 4] >= 0.5).all() and (boxes[:, 4] <= 1).all()
    # The box sits on the face's known place in the photo, shifted with the window.
    origins = np.array([window_origin(i) for i in range(n)], float)
    centres = (boxes[:, 0:2] + boxes[:, 2:4]) / 2 + origins
    assert np.abs(centres - FACE_CENTRE).max() < 15
    assert 80 < float(np.median(size)) < 130

    info = result.info
    assert info["frames"] == n and info["frames_with_face"] == n and info["coverage"] == 1.0
    assert info["tracks_seen"] == 1 and info["max_faces_in_a_frame"] == 1
    assert info["chosen_track"]["frames"] == n
    assert info["chosen_track"]["implausible_frames"] == 0
    assert 80 < info["chosen_track"]["mean_box_size_px"] < 130
    assert json.loads(json.dumps(info)) == info
    check_coverage(result)  # accepted


def test_landmarks_follow_the_window_shift(moving_result: FaceTrackResult):
    """The photo does not move: landmarks plus the window origin stay put (a few px)."""
    origins = np.array([window_origin(i) for i in range(20)], float)
    in_photo = moving_result.landmarks + origins[:, None, :]
    spread = np.abs(in_photo - np.median(in_photo, axis=0)).max(axis=(0, 1))
    assert (spread < 4).all(), spread


def test_68_point_layout_on_the_photo(analyzer: FaceAnalyzer):
    points = analyzer.analyze([astronaut()]).landmarks[0]
    x, y = points[:, 0], points[:, 1]
    assert x[36] < x[39] < x[42] < x[45]  # eye corners, image left to right
    assert x[48] < x[54]  # mouth corners
    assert int(np.argmax(y[0:17])) == 8  # chin is the lowest jaw point
    assert x[0] < x[8] < x[16]
    assert x[39] < x[30] < x[42]  # nose tip between the eyes ...
    assert y[30] > max(y[36:48])  # ... and below them
    assert max(y[17:27]) < min(y[36:48])  # brows above the eyes
    assert max(y[36:48]) < min(y[48:68])  # eyes above the mouth
    assert y[51] < y[62] < y[66] < y[57]  # upper lip, inner lips, lower lip
    # Inside the face's known region of the photo (x 178..273, y 83..178), with margin.
    assert (x > 160).all() and (x < 290).all() and (y > 80).all() and (y < 200).all()


def test_mapping_matches_a_direct_whole_frame_facemesh_call(analyzer: FaceAnalyzer):
    import mediapipe as mp

    photo = astronaut()
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True
    ) as direct:
        found = direct.process(photo).multi_face_landmarks
    assert found
    height, width = photo.shape[:2]
    mesh = np.array([(p.x * width, p.y * height) for p in found[0].landmark])
    reference = mesh[list(MEDIAPIPE_TO_68)]
    ours = analyzer.analyze([photo]).landmarks[0]
    error = np.linalg.norm(ours - reference, axis=1)
    assert error.mean() < 1.5 and error.max() < 4, error  # measured 0.7 / 2.1 px


def test_landmark_array_reads_the_same_values_as_protobufs_own_accessors():
    import mediapipe as mp
    from mediapipe.framework.formats import landmark_pb2

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True
    ) as direct:
        found = direct.process(astronaut()).multi_face_landmarks
    assert found and len(found[0].landmark) == 478
    by_attribute = np.array([(p.x, p.y, p.z) for p in found[0].landmark], np.float64)
    assert np.array_equal(landmark_array(found[0]), by_attribute)  # bit for bit
    assert len(found[0].SerializeToString()) == 478 * 17  # the mesh takes the fast path
    # Lists the fast path must not misread: a point with visibility set, one without z,
    # an empty list, and zeros (written, as proto2 fields that are set).
    odd = landmark_pb2.NormalizedLandmarkList()
    odd.landmark.add(x=0.25, y=0.5, z=-0.125)
    odd.landmark.add(x=0.75, y=0.0, z=0.0, visibility=0.5)
    odd.landmark.add(x=0.5, y=0.25)
    assert landmark_array(odd).tolist() == [[0.25, 0.5, -0.125], [0.75, 0.0, 0.0], [0.5, 0.25, 0.0]]
    assert landmark_array(landmark_pb2.NormalizedLandmarkList()).shape == (0, 3)
    zeros = landmark_pb2.NormalizedLandmarkList()
    zeros.landmark.add(x=0.0, y=0.0, z=0.0)
    assert landmark_array(zeros).tolist() == [[0.0, 0.0, 0.0]]


# --------------------------------------------------------------------------------------
# Gaps
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gap_result(analyzer: FaceAnalyzer) -> FaceTrackResult:
    frames = moving_clip(20)
    for index in range(8, 12):  # 4 frames without a face
        frames[index] = GRAY
    return analyzer.analyze(frames)


def test_a_stretch_without_face_is_not_detected(gap_result: FaceTrackResult):
    expected = np.ones(20, bool)
    expected[8:12] = False
    assert (gap_result.detected == expected).all()
    assert (gap_result.valid == expected).all()
    assert np.isnan(gap_result.landmarks[8:12]).all()
    assert gap_result.info["tracks_seen"] == 1  # the same face picked up after the gap


def test_a_short_enough_gap_is_filled_between_its_neighbours(gap_result: FaceTrackResult):
    filled = fill_gaps(gap_result, max_gap_frames=4)
    assert filled.valid.all()
    assert (filled.detected == gap_result.detected).all()
    assert filled.info["filled_frames"] == 4 and filled.info["coverage"] == 1.0
    for array in (filled.raw_bboxes, filled.landmarks, filled.landmarks_mesh):
        assert np.isfinite(array).all()
        before, after = array[7], array[12]
        for step, index in enumerate(range(8, 12), start=1):
            expected = before + (after - before) * step / 5
            np.testing.assert_allclose(array[index], expected, rtol=0, atol=1e-3)
    # The input is left as it was.
    assert not gap_result.valid[8:12].any() and np.isnan(gap_result.raw_bboxes[8:12]).all()


def test_a_longer_gap_stays_empty(gap_result: FaceTrackResult):
    kept = fill_gaps(gap_result, max_gap_frames=3)
    assert (kept.valid == gap_result.detected).all()
    assert np.isnan(kept.landmarks[8:12]).all() and kept.info["filled_frames"] == 0


def synthetic_result(detected: list[bool]) -> FaceTrackResult:
    """A result whose face moves +1 px per frame (box, 68 points, mesh), NaN where absent."""
    n = len(detected)
    mask = np.array(detected)
    t = np.arange(n, dtype=np.float32)
    boxes = np.stack([t, t, t + 10, t + 10, np.full(n, 0.9, np.float32)], axis=1)
    landmarks = np.broadcast_to(t[:, None, None], (n, 68, 2)).copy()
    mesh = np.broadcast_to(t[:, None, None], (n, 478, 3)).copy()
    for array in (boxes, landmarks, mesh):
        array[~mask] = np.nan
    info = {"frames": n, "chosen_track": {"frames": int(mask.sum()), "implausible_frames": 0}}
    return FaceTrackResult(boxes, landmarks, mesh, mask, mask.copy(), info)


def test_fill_gaps_leaves_leading_and_trailing_gaps_and_long_runs():
    #                  0      1      2     3      4      5     6      7      8     9
    pattern = [False, False, True, False, False, True, False, False, False, True, False]
    result = fill_gaps(synthetic_result(pattern), max_gap_frames=2)
    assert result.valid.tolist() == [False, False, True, True, True, True,
                                     False, False, False, True, False]  # fmt: skip
    assert result.detected.tolist() == pattern
    # Interpolation of a linear motion is exact.
    np.testing.assert_allclose(result.raw_bboxes[3, :4], [3, 3, 13, 13])
    np.testing.assert_allclose(result.landmarks[4], 4.0)
    np.testing.assert_allclose(result.landmarks_mesh[3], 3.0)
    assert np.isnan(result.raw_bboxes[[0, 1, 6, 7, 8, 10]]).all()
    assert result.info["filled_frames"] == 2
    again = fill_gaps(result, max_gap_frames=2)  # idempotent
    assert (again.valid == result.valid).all() and again.info["filled_frames"] == 2
    assert (fill_gaps(result, max_gap_frames=0).valid == result.valid).all()


def test_fill_gaps_in_place_fills_the_same_values_in_the_result_itself():
    pattern = [False, True, False, False, True, False, True]
    copied = fill_gaps(synthetic_result(pattern), max_gap_frames=2)
    result = synthetic_result(pattern)
    mesh = result.landmarks_mesh
    filled = fill_gaps(result, max_gap_frames=2, in_place=True)
    assert filled is result and filled.landmarks_mesh is mesh  # no copy
    for name in ("raw_bboxes", "landmarks", "landmarks_mesh", "detected", "valid"):
        np.testing.assert_array_equal(getattr(filled, name), getattr(copied, name), name)
    assert filled.info == copied.info


# --------------------------------------------------------------------------------------
# Several faces: one identity
# --------------------------------------------------------------------------------------


def two_face_clip(count: int, big_frames: range | None = None) -> list[np.ndarray]:
    """A small face (left) and a big face (right), both drifting; the big one only in
    ``big_frames`` when given."""
    small, big = face_patch(0.6), face_patch(1.0)
    frames = []
    for index in range(count):
        canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        paste(canvas, small, 30 + index, 120)
        if big_frames is None or index in big_frames:
            paste(canvas, big, 260 - index, 60 + index % 3)
        frames.append(canvas)
    return frames


def test_the_larger_of_two_faces_is_followed_in_every_frame(analyzer: FaceAnalyzer):
    result = analyzer.analyze(two_face_clip(12))
    assert result.detected.all()
    centres_x = (result.raw_bboxes[:, 0] + result.raw_bboxes[:, 2]) / 2
    assert (centres_x > WIDTH / 2).all(), centres_x  # always the big face on the right
    assert np.abs(np.diff(centres_x)).max() < 5  # never jumps
    assert result.info["tracks_seen"] == 2 and result.info["max_faces_in_a_frame"] == 2
    assert result.info["chosen_track"]["mean_box_size_px"] > 80


@pytest.mark.parametrize(
    ("options", "tracks"),
    [
        ({"landmark_mode": "static"}, 2),
        ({"landmark_mode": "tracking", "detect_every": 3}, 2),
        # The default detects at frames 0 and 10 while the small face is followed: the big
        # face comes and goes in between, unseen (a new face waits for a detection).
        ({}, 1),
    ],
)
def test_a_persistent_face_beats_a_big_face_seen_briefly(
    analyzer: FaceAnalyzer, options: dict, tracks: int
):
    """Summed box area: the small face (0.36 x 12 frames) outweighs the big (1 x 3)."""
    result = analyzer.analyze(two_face_clip(12, big_frames=range(4, 7)), **options)
    assert result.detected.all()
    centres_x = (result.raw_bboxes[:, 0] + result.raw_bboxes[:, 2]) / 2
    assert (centres_x < WIDTH / 2).all(), centres_x
    assert result.info["tracks_seen"] == tracks


def test_tracks_link_by_overlap_skip_frames_and_resume():
    def face(x: float) -> FaceInFrame:
        return FaceInFrame(np.array([x, 0, x + 50, 50, 0.9], np.float32), np.zeros((6, 2)))

    tracks: list[FaceTrack] = []
    link_faces(tracks, 0, [face(0), face(200)])
    link_faces(tracks, 1, [face(205), face(3)])  # order does not matter
    link_faces(tracks, 4, [face(6)])  # skipped 2 frames: still the same track
    link_faces(tracks, 30, [face(10)])  # long absence, overlap 0.67 >= resume IoU
    link_faces(tracks, 60, [face(30)])  # long absence, overlap 0.25 < resume IoU: new
    assert [sorted(t.faces) for t in tracks] == [[0, 1, 4, 30], [0, 1], [60]]
    assert float(tracks[0].faces[30].box[0]) == 10


# --------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gray", "bars", "noise"])
def test_frames_without_a_face_are_rejected(analyzer: FaceAnalyzer, kind: str):
    rng = np.random.default_rng(0)
    frame = {
        "gray": GRAY,
        "bars": colour_bars(),
        "noise": rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
    }[kind]
    result = analyzer.analyze([frame] * 6)
    assert not result.detected.any() and np.isnan(result.raw_bboxes).all()
    assert result.info["tracks_seen"] == 0 and result.info["chosen_track"] is None
    with pytest.raises(InputRejected, match="no face"):
        check_coverage(fill_gaps(result, 5))


def test_a_face_in_too_few_frames_is_rejected_with_its_percentage(analyzer: FaceAnalyzer):
    frames = moving_clip(6) + [GRAY] * 14
    result = fill_gaps(analyzer.analyze(frames), max_gap_frames=5)
    assert result.detected.sum() == 6
    with pytest.raises(InputRejected, match=r"face in 30% of frames"):
        check_coverage(result, min_face_coverage=0.5)
    check_coverage(result, min_face_coverage=0.3)  # 30 % is enough when 30 % is asked


def test_a_face_in_too_few_frames_for_a_track_is_no_face():
    result = synthetic_result([True, True] + [False] * 8)
    with pytest.raises(InputRejected, match="no face"):
        check_coverage(result, min_face_coverage=0.1, min_track_frames=3)
    check_coverage(result, min_face_coverage=0.1, min_track_frames=2)


def test_upside_down_frames_are_not_faces(analyzer: FaceAnalyzer):
    frames = [np.ascontiguousarray(np.rot90(frame, 2)) for frame in moving_clip(6)]
    result = analyzer.analyze(frames)
    assert not result.valid.any() and np.isnan(result.landmarks).all()
    with pytest.raises(InputRejected):
        check_coverage(result)


class TurnedDetector(FaceAnalyzer):
    """A detector that does find upside-down faces (the real one turns the frame back)."""

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        height, width = rgb.shape[:2]
        turned: list[tuple[np.ndarray, np.ndarray | None]] = []
        for box, keypoints in super().detect(np.ascontiguousarray(np.rot90(rgb, 2))):
            assert keypoints is not None
            box = np.array([width - box[2], height - box[3], width - box[0], height - box[1],
                            box[4]], np.float32)  # fmt: skip
            turned.append((box, np.array([width, height]) - keypoints))
        return turned


def test_the_sanity_check_rejects_meshes_of_upside_down_faces():
    frames = [np.ascontiguousarray(np.rot90(frame, 2)) for frame in moving_clip(6)]
    with TurnedDetector() as turned:
        result = turned.analyze(frames)
    chosen = result.info["chosen_track"]
    assert chosen["frames"] == 6 and chosen["implausible_frames"] == 6  # found, not accepted
    assert not result.detected.any() and np.isnan(result.raw_bboxes).all()
    with pytest.raises(InputRejected, match="implausible"):
        check_coverage(result)


def plausible_mesh(mesh: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None) -> bool:
    return plausible_landmarks(mesh_to_68(mesh), box, keypoints)


def test_the_sanity_check_on_one_face(analyzer: FaceAnalyzer):
    photo = astronaut()
    [(box, keypoints)] = analyzer.detect(photo)
    assert keypoints is not None
    mesh = analyzer.mesh(photo, box)
    assert mesh is not None and mesh.shape == (478, 3)
    assert plausible_mesh(mesh, box, keypoints)
    flipped = keypoints.copy()
    flipped[:, 1] = 2 * keypoints[:, 1].mean() - keypoints[:, 1]  # detector says: mouth up
    assert not plausible_mesh(mesh, box, flipped)
    elsewhere = box + np.array([200, 0, 200, 0, 0], np.float32)  # mesh outside the box
    assert not plausible_mesh(mesh, elsewhere, keypoints + np.array([200, 0]))
    upside_down = mesh.copy()
    upside_down[:, 1] = 512 - upside_down[:, 1]
    assert not plausible_mesh(upside_down, box, keypoints)  # roll 180 and disagreement
    # Without detector keypoints (given boxes, FAN) the roll and box checks still apply.
    assert plausible_mesh(mesh, box, None)
    assert not plausible_mesh(upside_down, box, None)
    assert not plausible_mesh(mesh, elsewhere, None)


def _plausible_by_numpy(points, box, keypoints) -> bool:
    """The sanity check's rule as its docstring states it, in numpy (the reference)."""

    def angle(u, v):
        cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9)
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    eyes, mouth = points[36:48].mean(axis=0), points[48:68].mean(axis=0)
    axis = mouth - eyes
    if not np.isfinite(axis).all() or np.linalg.norm(axis) < 1e-3:
        return False
    if keypoints is not None and angle(axis, keypoints[3] - keypoints[:2].mean(axis=0)) > 60:
        return False
    if angle(axis, np.array([0.0, 1.0])) > 100:
        return False
    centre = (eyes + mouth) / 2
    return bool(box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3])


def test_the_sanity_check_follows_its_rule_on_varied_faces(analyzer: FaceAnalyzer):
    photo = astronaut()
    [(box, keypoints)] = analyzer.detect(photo)
    mesh = analyzer.mesh(photo, box)
    assert mesh is not None
    face = mesh_to_68(mesh).astype(np.float64)
    centre = face.mean(axis=0)
    rng = np.random.default_rng(5)
    verdicts = []
    for trial in range(400):
        turn = np.radians(rng.uniform(-180, 180))
        rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        points = ((face - centre) @ rotation.T + centre + rng.normal(0, 40, 2)).astype(np.float32)
        if trial % 7 == 0:
            points[rng.integers(0, 36)] = np.nan  # jaw, brows or nose: not part of the rule
        if trial % 11 == 0:
            points[rng.integers(36, 68)] = np.inf  # an eye or mouth point: not plausible
        given = keypoints if trial % 2 else None
        expected = _plausible_by_numpy(points, box, given)
        assert plausible_landmarks(points, box, given) == expected, trial
        assert plausible_landmarks(points, tuple(box), given) == expected  # any sequence
        verdicts.append(expected)
    assert 50 < sum(verdicts) < 350  # both verdicts well represented


def test_frames_must_be_rgb_uint8(analyzer: FaceAnalyzer):
    with pytest.raises(ValueError, match="uint8"):
        analyzer.analyze([np.zeros((32, 32), np.uint8)])
    with pytest.raises(ValueError, match="filter_threshold"):
        FaceAnalyzer(filter_threshold=1.5)


def test_an_empty_clip_has_no_face(analyzer: FaceAnalyzer):
    result = analyzer.analyze([])
    assert len(result) == 0 and result.landmarks.shape == (0, 68, 2)
    with pytest.raises(InputRejected, match="no face"):
        check_coverage(fill_gaps(result, 5))


# --------------------------------------------------------------------------------------
# Through a real video file
# --------------------------------------------------------------------------------------


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """Encode RGB frames to an mp4 with the pipeline's ffmpeg (raw video on stdin)."""
    height, width = frames[0].shape[:2]
    command = [
        ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0", *media._video_codec_args(), "-f", "mp4", media._url(path),
    ]  # fmt: skip
    subprocess.run(command, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def test_a_decoded_mp4_gives_the_same_face(
    analyzer: FaceAnalyzer, moving_result: FaceTrackResult, media_dir: Path
):
    path = write_mp4(media_dir / "astronaut.mp4", moving_clip(20))
    result = analyzer.analyze(frame.rgb for frame in decode_frames(path))
    assert len(result) == 20 and result.detected.all()
    assert np.abs(result.raw_bboxes[:, :4] - moving_result.raw_bboxes[:, :4]).max() < 6
    assert np.abs(result.landmarks - moving_result.landmarks).max() < 6
    check_coverage(fill_gaps(result, 5))


def test_a_test_pattern_video_has_no_face(analyzer: FaceAnalyzer, media_dir: Path):
    path = media.make_video_only(media_dir / "pattern.mp4", seconds=1.0)
    result = analyzer.analyze(frame.rgb for frame in decode_frames(path))
    assert len(result) == 25 and not result.detected.any()
    with pytest.raises(InputRejected, match="no face"):
        check_coverage(result)


# --------------------------------------------------------------------------------------
# Landmarks in given boxes (FaceLandmarksNode with a raw_bboxes input)
# --------------------------------------------------------------------------------------


def test_landmarks_in_given_boxes_equal_those_in_detected_boxes(
    analyzer: FaceAnalyzer, static_result: FaceTrackResult
):
    """The static mesh runs on a crop made from the box, so the same box gives the same
    points."""
    boxes = static_result.raw_bboxes.copy()
    boxes[7] = np.nan  # the user's file says: no face in frame 7
    result = landmarks_in_boxes(analyzer, moving_clip(20), boxes[:, :4])
    expected = static_result.landmarks.copy()
    expected[7] = np.nan
    np.testing.assert_array_equal(result.landmarks, expected)
    assert result.detected.sum() == 19 and not result.detected[7]
    np.testing.assert_array_equal(result.raw_bboxes[:, 4][result.detected], 1.0)  # no score given
    assert result.info["bboxes"] == "given" and result.info["backend"] == "mediapipe"
    filled = fill_gaps(result, 1)
    assert filled.valid.all() and filled.info["filled_frames"] == 1


def test_given_boxes_on_the_wrong_place_or_of_the_wrong_count(analyzer: FaceAnalyzer):
    frames = moving_clip(4)
    away = np.tile(np.array([[330.0, 200.0, 420.0, 300.0]], np.float32), (4, 1))  # no face
    result = landmarks_in_boxes(analyzer, frames, away)
    assert not result.detected.any()
    with pytest.raises(InputRejected, match="given boxes cover 5 frames, the video has 4"):
        landmarks_in_boxes(analyzer, frames, np.zeros((5, 4), np.float32))
    with pytest.raises(InputRejected, match=r"\(N, 4\) or \(N, 5\)"):
        landmarks_in_boxes(analyzer, frames, np.zeros((4, 3), np.float32))


# --------------------------------------------------------------------------------------
# Tracking mode (the default) against static mode (the behaviour before it)
# --------------------------------------------------------------------------------------


def legacy_track_faces(model: FaceModel, frames: list[np.ndarray]) -> FaceTrackResult:
    """track_faces as it was before tracking mode, verbatim: detector and static mesh on
    every frame (the reference for ``landmark_mode="static"``)."""
    tracks: list[FaceTrack] = []
    count = 0
    max_faces = 0
    for index, frame in enumerate(frames):
        rgb = as_rgb(frame)
        detections = model.detect(rgb)
        max_faces = max(max_faces, len(detections))
        faces = [FaceInFrame(box, keypoints) for box, keypoints in detections[:MAX_FACES_PER_FRAME]]
        for face in faces:
            face.landmarks = model.landmarks(rgb, face.box)
        link_faces(tracks, index, faces)
        count = index + 1
    result = _assemble(main_track(tracks), count, model)
    result.info.update(tracks_seen=len(tracks), max_faces_in_a_frame=max_faces)
    return result


def gap_clip() -> list[np.ndarray]:
    frames = moving_clip(20)
    frames[8:12] = [GRAY] * 4
    return frames


def crossing_clip(count: int = 30) -> list[np.ndarray]:
    """Two faces of about the same size passing each other side by side: the upper one
    (slightly larger) moves right, the lower one left, 10 px a frame each; at frame ~14
    they are one above the other, 40 px apart."""
    upper, lower = face_patch(0.62), face_patch(0.58)
    frames = []
    for index in range(count):
        canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        paste(canvas, upper, 20 + 10 * index, 4)
        paste(canvas, lower, 320 - 10 * index, 4 + upper.shape[0] + 40)
        frames.append(canvas)
    return frames


def entering_clip(count: int, enters: int) -> list[np.ndarray]:
    """The small face from the start; a big face enters at frame ``enters`` and stays."""
    return two_face_clip(count, big_frames=range(enters, count))


def assert_same_result(result: FaceTrackResult, expected: FaceTrackResult) -> None:
    for name in ("raw_bboxes", "landmarks", "landmarks_mesh", "detected", "valid"):
        np.testing.assert_array_equal(getattr(result, name), getattr(expected, name), name)
    assert {k: v for k, v in result.info.items() if k in expected.info} == expected.info


@pytest.mark.parametrize(
    "clip",
    [lambda: moving_clip(20), gap_clip, lambda: two_face_clip(12), lambda: crossing_clip(16)],
    ids=["moving", "gap", "two", "crossing"],
)
def test_static_mode_reproduces_the_code_before_tracking_mode(analyzer: FaceAnalyzer, clip):
    frames = clip()
    result = analyzer.analyze(frames, landmark_mode="static")
    assert_same_result(result, legacy_track_faces(analyzer, frames))
    info = result.info
    assert info["landmark_mode"] == "static" and info["detect_every"] == 1
    assert info["detector_frames"] == len(frames)


@pytest.mark.parametrize("clip", [lambda: moving_clip(20), gap_clip], ids=["moving", "gap"])
@pytest.mark.parametrize("detect_every", [1, 5, 10])
def test_tracking_finds_the_same_face_frames_as_static(
    analyzer: FaceAnalyzer, clip, detect_every: int
):
    frames = clip()
    static = analyzer.analyze(frames, landmark_mode="static")
    tracked = analyzer.analyze(frames, landmark_mode="tracking", detect_every=detect_every)
    np.testing.assert_array_equal(tracked.detected, static.detected)
    assert tracked.info["tracks_seen"] == static.info["tracks_seen"] == 1
    # Not the same points (the tracking mesh places its own region of interest) but close:
    # measured 0.35-0.45 px mean, under 3.1 px max, on this face (interocular 44 px).
    error = np.linalg.norm(tracked.landmarks - static.landmarks, axis=-1)[static.detected]
    assert error.mean() < 2.5 and error.max() < 8, (error.mean(), error.max())
    boxes_error = np.abs(tracked.raw_bboxes - static.raw_bboxes)[static.detected, :4]
    assert boxes_error.max() < 10, boxes_error.max()  # the detector's own jitter: see below
    info = tracked.info
    assert info["landmark_mode"] == "tracking" and info["detect_every"] == detect_every
    # Detections: every detect_every-th frame, plus frame 8 where the face vanished and
    # frames 9-12 while none was followed (the face found again at once, at 12).
    due = set(range(0, 20, detect_every))
    if clip is gap_clip:
        due |= {8, 9, 10, 11, 12}
    assert info["detector_frames"] == len(due), info


def in_photo(result: FaceTrackResult) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4) and landmarks (N, 68, 2) of a moving_clip result in the photo's
    coordinates, where the face does not move."""
    origins = np.array([window_origin(i) for i in range(len(result))], float)
    return result.raw_bboxes[:, :4] + np.tile(origins, 2), result.landmarks + origins[:, None]


@pytest.mark.parametrize("detect_every", [5, 10])
def test_between_detections_the_box_follows_the_face_and_keeps_the_score(
    analyzer: FaceAnalyzer, static_result: FaceTrackResult, detect_every: int
):
    tracked = analyzer.analyze(moving_clip(20), detect_every=detect_every)
    detections = list(range(0, 20, detect_every))
    # At a detection, the detector's box; in between, that box moved and scaled with the
    # mesh, so the box stays where the face is (it does not move in the photo) at least as
    # well as the detector's own boxes do (measured: 1.8 vs 3.3 px from the median).
    np.testing.assert_array_equal(
        tracked.raw_bboxes[detections], static_result.raw_bboxes[detections]
    )
    boxes, _ = in_photo(tracked)
    static_boxes, _ = in_photo(static_result)
    spread = np.abs(boxes - np.median(boxes, axis=0)).max(axis=0)
    static_spread = np.abs(static_boxes - np.median(static_boxes, axis=0)).max(axis=0)
    assert (spread <= static_spread.max() + 0.5).all(), (spread, static_spread)
    for index in range(20):
        last_detection = index - index % detect_every
        assert tracked.raw_bboxes[index, 4] == static_result.raw_bboxes[last_detection, 4]


@pytest.mark.parametrize("detect_every", [3, 5, 8])
def test_a_face_entering_is_found_within_detect_every_frames(
    analyzer: FaceAnalyzer, detect_every: int
):
    enters = 6
    frames = entering_clip(24, enters)
    result = analyzer.analyze(frames, landmark_mode="tracking", detect_every=detect_every)
    assert result.info["tracks_seen"] == 2
    chosen = result.info["chosen_track"]  # the big face: 0.36 x 24 < 1 x 18 frames
    assert enters <= chosen["first_frame"] < enters + detect_every, chosen
    assert chosen["first_frame"] % detect_every == 0  # at the next scheduled detection
    assert result.detected[chosen["first_frame"] :].all()
    centres_x = (result.raw_bboxes[:, 0] + result.raw_bboxes[:, 2]) / 2
    assert (centres_x[result.detected] > WIDTH / 2).all()


@pytest.mark.parametrize("detect_every", [1, 5, 10])
def test_identity_is_kept_when_two_faces_pass_side_by_side(
    analyzer: FaceAnalyzer, detect_every: int
):
    frames = crossing_clip(30)
    static = analyzer.analyze(frames, landmark_mode="static")
    tracked = analyzer.analyze(frames, landmark_mode="tracking", detect_every=detect_every)
    for result in (static, tracked):
        assert result.detected.all() and result.info["tracks_seen"] == 2
        assert result.info["max_faces_in_a_frame"] == 2
        centres = (result.raw_bboxes[:, 0:2] + result.raw_bboxes[:, 2:4]) / 2
        assert (centres[:, 1] < HEIGHT / 2).all()  # always the upper face ...
        steps = np.diff(centres[:, 0])
        assert (steps > 5).all() and (steps < 15).all(), steps  # ... moving right, no jump
    error = np.abs(tracked.raw_bboxes[:, :4] - static.raw_bboxes[:, :4]).max()
    assert error < 8, error  # the followed face is the same one


class MissingDetector(FaceAnalyzer):
    """A detector that finds nothing on its calls numbered in ``missed`` (from 0)."""

    def __init__(self, missed: set[int]) -> None:
        super().__init__()
        self.missed = missed
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        self.calls += 1
        return [] if self.calls - 1 in self.missed else super().detect(rgb)


def test_a_followed_face_the_detector_misses_goes_on_but_a_new_face_waits():
    frames = moving_clip(20)
    with MissingDetector({2}) as missing:  # the detection at frame 10 finds nothing
        tracked = missing.analyze(frames, landmark_mode="tracking", detect_every=5)
        assert tracked.detected.all() and tracked.info["tracks_seen"] == 1
        assert tracked.info["detector_frames"] == 4  # frames 0, 5, 10, 15
        missing.calls = 0
        static = missing.analyze(frames, landmark_mode="static")
        assert static.detected.sum() == 19 and not static.detected[2]
    with MissingDetector({0}) as missing:  # nothing at frame 0: none followed, so at 1
        tracked = missing.analyze(frames, landmark_mode="tracking", detect_every=5)
        assert tracked.detected[1:].all() and not tracked.detected[0]
        assert tracked.info["detector_frames"] == 5  # frames 0, 1, 6, 11, 16


class TrackerCount(FaceAnalyzer):
    """FaceAnalyzer that counts its open landmark trackers."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.most_open = 0
        self.made = 0

    def landmark_tracker(self) -> MeshTracker:
        tracker = super().landmark_tracker()
        self.open += 1
        self.made += 1
        self.most_open = max(self.most_open, self.open)
        close = tracker.close

        def counted_close() -> None:
            if tracker._mesh is not None:
                self.open -= 1
            close()

        tracker.close = counted_close  # type: ignore[method-assign]
        return tracker


def test_one_tracker_per_track_closed_when_lost_and_at_the_end():
    frames = entering_clip(12, 3) + [GRAY] * 3 + moving_clip(5)
    with TrackerCount() as counted:
        result = counted.analyze(frames, landmark_mode="tracking", detect_every=4)
        # small face + big face, then after the gray frames the photo face: three tracks
        # and trackers, never more than two at once, none left open.
        assert result.info["tracks_seen"] == 3
        assert counted.made == 3 and counted.most_open == 2 and counted.open == 0
        with pytest.raises(ValueError, match="uint8"):
            counted.analyze([*moving_clip(3), np.zeros((8, 8), np.uint8)])
        assert counted.open == 0  # closed on errors too


class NoTracking:
    """A face model without tracking (as the face-alignment backend): its detector and a
    fixed set of landmarks."""

    name = "plain"
    filter_threshold = 0.5

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return self.analyzer.detect(rgb)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> FaceLandmarks | None:
        return self.analyzer.landmarks(rgb, box)

    def close(self) -> None:
        pass


def test_a_model_without_tracking_detects_every_frame(analyzer: FaceAnalyzer):
    frames = moving_clip(6)
    result = track_faces(NoTracking(analyzer), frames, "tracking", 5)
    assert result.info["landmark_mode"] == "static" and result.info["detect_every"] == 1
    assert result.info["detector_frames"] == 6
    expected = legacy_track_faces(analyzer, frames)
    expected.info["backend"] = "plain"
    assert_same_result(result, expected)


def test_landmark_mode_and_detect_every_are_checked(analyzer: FaceAnalyzer):
    with pytest.raises(ValueError, match="landmark_mode"):
        track_faces(analyzer, [], "fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="detect_every"):
        track_faces(analyzer, [], "tracking", 0)
    assert FaceAlignmentConfig().landmark_mode == "tracking"
    assert FaceAlignmentConfig().detect_every == DEFAULT_DETECT_EVERY
    assert FaceAlignmentConfig(landmark_mode="static").landmark_mode == "static"
    with pytest.raises(pydantic.ValidationError):
        FaceAlignmentConfig(detect_every=0)
    with pytest.raises(pydantic.ValidationError):
        FaceAlignmentConfig(landmark_mode="fast")


def rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    centre = (image.shape[1] / 2, image.shape[0] / 2)
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1])


def test_the_box_predicted_from_a_mesh_is_the_detectors_and_ignores_roll(
    analyzer: FaceAnalyzer,
):
    photo = astronaut()
    [(box, _)] = analyzer.detect(photo)
    landmarks = analyzer.landmarks(photo, box)
    assert landmarks is not None and landmarks.mesh is not None
    predicted = box_from_mesh(landmarks.mesh)
    side = float(box[2] - box[0])
    assert predicted.shape == (4,) and predicted.dtype == np.float32
    assert np.abs(predicted - box[:4]).max() < 0.05 * side, (predicted, box)
    np.testing.assert_array_equal(analyzer.predict_box(landmarks), predicted)
    assert analyzer.predict_box(FaceLandmarks(landmarks.points)) is None  # no mesh
    # A rolled head: the same size (measured along the face), centred on the face.
    for degrees in (-20, 20):
        turned = rotated(photo, degrees)
        [(turned_box, _)] = analyzer.detect(turned)
        mesh = analyzer.mesh(turned, turned_box)
        assert mesh is not None
        turned_predicted = box_from_mesh(mesh)
        turned_side = float(turned_predicted[2] - turned_predicted[0])
        assert abs(turned_side / float(predicted[2] - predicted[0]) - 1) < 0.03
        centre = (turned_predicted[:2] + turned_predicted[2:]) / 2
        face_centre = mesh_to_68(mesh)[36:68].mean(axis=0)
        assert np.abs(centre - face_centre).max() < 0.1 * side


def test_a_closed_tracker_says_so(analyzer: FaceAnalyzer):
    tracker = analyzer.landmark_tracker()
    tracker.close()
    tracker.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        tracker.landmarks(astronaut(), np.array([178, 83, 273, 178], np.float32))


def test_the_face_node_passes_its_landmark_mode_and_detect_every(monkeypatch):
    from dpl_assets.assets import faces as face_assets

    class Stack:
        def __init__(self) -> None:
            self.attrs = {"width": 64, "height": 48}

        def open(self):
            return contextlib.nullcontext([])

    class IO:
        model = "the model"

        def given(self, key: str) -> bool:
            return False

        def __getitem__(self, key: str) -> Stack:
            return Stack()

        def frames(self, key: str):
            return contextlib.nullcontext(iter([]))

    calls = []

    def fake_track_faces(model, frames, landmark_mode, detect_every, follow=None):
        calls.append((model, landmark_mode, detect_every))
        return synthetic_result([True] * 5)

    monkeypatch.setattr(face_assets, "track_faces", fake_track_faces)
    for config, expected in [
        (FaceAlignmentConfig(), ("tracking", DEFAULT_DETECT_EVERY)),
        (FaceAlignmentConfig(landmark_mode="static"), ("static", DEFAULT_DETECT_EVERY)),
        (FaceAlignmentConfig(detect_every=3), ("tracking", 3)),
    ]:
        outputs = face_assets.analyze_faces(IO(), config)  # type: ignore[arg-type]
        assert calls.pop() == ("the model", *expected)
        assert outputs["face_mask"].tolist() == [1] * 5


# A fresh process: mediapipe is imported by the first face model made in it.
FIRST_MODEL_SCRIPT = """
import gc, weakref
import numpy as np
from dpl_assets.nodes.mediapipe_faces import FaceAnalyzer

def a_step():
    output = np.zeros(1000, np.float32)  # what a step holds when it returns
    with FaceAnalyzer() as analyzer:
        analyzer.detect(np.zeros((64, 64, 3), np.uint8))
    return weakref.ref(output)

freed = a_step()
gc.collect()
print("freed" if freed() is None else "kept")
"""


def test_the_first_face_model_keeps_nothing_of_the_stack_that_made_it():
    # mediapipe's import keeps an exception whose traceback holds the importing stack
    # (where PortAudio is missing): a step's locals would stay alive for the process.
    out = subprocess.run(
        [sys.executable, "-c", FIRST_MODEL_SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[-1] == "freed"


@pytest.mark.parametrize(("x0", "y0"), [(10, 5), (-7, 20), (40, -3), (50, 30)])
def test_a_crop_cut_into_a_reused_buffer_is_the_crop_cut_alone(x0, y0):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    side = 24
    # The window by hand: black outside the frame.
    padded = np.zeros((48 + 2 * side, 64 + 2 * side, 3), np.uint8)
    padded[side : side + 48, side : side + 64] = frame
    expected = padded[side + y0 : side + y0 + side, side + x0 : side + x0 + side]
    buffer = np.full(side * side * 3 + 100, 77, np.uint8)  # stale bytes from a last frame
    crop = square_crop(frame, x0, y0, side, buffer)
    np.testing.assert_array_equal(crop, expected)
    np.testing.assert_array_equal(square_crop(frame, x0, y0, side), expected)
    assert crop.flags.c_contiguous and np.shares_memory(crop, buffer)
    with pytest.raises(ValueError, match="needs"):
        square_crop(frame, x0, y0, side, np.empty(10, np.uint8))
