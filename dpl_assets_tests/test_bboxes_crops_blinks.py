"""Boxes, crops and blinks against hand-computed geometry and direct numpy/scipy/cv2 calls."""

import cv2
import numpy as np
import pytest
from scipy.signal import savgol_filter

from dpl_assets.nodes.bboxes import emoca_like_bboxes, fixed_bboxes, transform_raw_bboxes
from dpl_assets.nodes.blinks import eye_openness
from dpl_assets.nodes.crops import crop_frames, crop_square
from dpl_assets.outcomes import InputRejected


def rect_landmarks(rects, seed: int = 0) -> np.ndarray:
    """Landmarks (N, 68, 2) whose extent in frame i is exactly rects[i] = (x1, y1, x2, y2).

    Two points sit on opposite corners, the other 66 inside; a NaN rect gives a NaN frame.
    """
    rng = np.random.default_rng(seed)
    out = np.full((len(rects), 68, 2), np.nan)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(rects, np.float64)):
        if np.isnan(x1):
            continue
        out[i, :, 0] = rng.uniform(x1, x2, 68)
        out[i, :, 1] = rng.uniform(y1, y2, 68)
        out[i, 0], out[i, 1] = (x1, y1), (x2, y2)
    return out


def landmark_side(w, h, scale=1.25):
    """The original's landmark box side: mean(w, h) x 1.1 x scale."""
    return (np.asarray(w) + np.asarray(h)) / 2 * 1.1 * scale


def centres_and_sides(boxes: np.ndarray):
    boxes = boxes.astype(np.float64)
    return (
        (boxes[:, 0] + boxes[:, 2]) / 2,
        (boxes[:, 1] + boxes[:, 3]) / 2,
        boxes[:, 2] - boxes[:, 0],
    )


def assert_square(boxes: np.ndarray) -> None:
    assert boxes.dtype == np.int64 and boxes.shape[1] == 4
    np.testing.assert_array_equal(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


# --- transform_raw_bboxes -----------------------------------------------------------------


def test_transform_raw_bboxes_makes_padded_squares_centred_on_each_box():
    raw = np.array([[10.0, 20.0, 50.0, 40.0, 0.99], [0.0, 0.0, 3.0, 3.0, 0.5]])
    # Box 0: w 40, h 20, centre (30, 30): side 40 x 1.5 = 60. Box 1: side 4.5 -> 5 px.
    boxes = transform_raw_bboxes(raw, extend_factor=0.5)
    np.testing.assert_array_equal(boxes, [[0, 0, 60, 60], [-1, -1, 4, 4]])
    assert boxes.dtype == np.int64


def test_transform_raw_bboxes_rejects_frames_without_a_box_and_counts_them():
    raw = np.tile([10.0, 20.0, 50.0, 40.0, 0.9], (5, 1))
    raw[[1, 3]] = np.nan
    with pytest.raises(InputRejected, match=r"2 of 5 frames"):
        transform_raw_bboxes(raw, extend_factor=0.1)


# --- fixed_bboxes -------------------------------------------------------------------------


def test_fixed_bboxes_frame_the_extent_of_all_face_frames_once():
    nan = (np.nan,) * 4
    rects = [(100, 60, 180, 150), nan, (120, 50, 200, 140), (110, 70, 190, 160), nan]
    boxes = fixed_bboxes(rect_landmarks(rects), scale=1.25)
    # Clip extent x 100..200, y 50..160: centre (150, 105), side mean(100, 110) x 1.1 x 1.25.
    side = round(landmark_side(100, 110))
    assert side == 144
    expected = [150 - side // 2, 105 - side // 2, 150 + side // 2, 105 + side // 2]
    np.testing.assert_array_equal(boxes, np.tile(expected, (5, 1)))
    assert_square(boxes)


def test_fixed_bboxes_reject_a_clip_without_face():
    with pytest.raises(InputRejected, match="no face"):
        fixed_bboxes(np.full((4, 68, 2), np.nan))


# --- emoca_like_bboxes --------------------------------------------------------------------


def test_emoca_like_constant_face_gives_the_fixed_box_in_every_frame():
    landmarks = np.repeat(rect_landmarks([(100, 50, 200, 130)]), 40, axis=0)
    boxes = emoca_like_bboxes(landmarks)
    # Centre (150, 90), side mean(100, 80) x 1.1 x 1.25 = 123.75 -> 124.
    np.testing.assert_array_equal(boxes, np.tile([88, 28, 212, 152], (40, 1)))
    np.testing.assert_array_equal(boxes, fixed_bboxes(landmarks))


def test_emoca_like_box_frames_the_extent_over_its_window():
    rects = np.tile([100.0, 50.0, 200.0, 130.0], (9, 1))
    rects[4] += [60, 0, 60, 0]  # the face jumps right in frame 4 only
    boxes = emoca_like_bboxes(
        rect_landmarks(rects), window_size=3, use_smoothing=False, equal_size=False
    )
    cx, cy, side = centres_and_sides(boxes)
    # Frames 3, 4, 5 see x 100..260 in their window; the others only x 100..200.
    wide, narrow = np.isin(np.arange(9), [3, 4, 5]), ~np.isin(np.arange(9), [3, 4, 5])
    np.testing.assert_allclose(cx[wide], 180, atol=0.5)
    np.testing.assert_allclose(side[wide], round(landmark_side(160, 80)))
    np.testing.assert_allclose(cx[narrow], 150, atol=0.5)
    np.testing.assert_allclose(side[narrow], round(landmark_side(100, 80)))
    np.testing.assert_allclose(cy, 90, atol=0.5)


def test_emoca_like_smoothing_reduces_frame_to_frame_jitter():
    rng = np.random.default_rng(1)
    top_left = np.array([100.0, 50.0]) + rng.normal(0, 3, (120, 2))
    rects = np.hstack([top_left, top_left + np.array([100.0, 80.0])])
    landmarks = rect_landmarks(rects)
    raw = emoca_like_bboxes(landmarks, window_size=1, use_smoothing=False, equal_size=False)
    smooth = emoca_like_bboxes(landmarks, window_size=1, use_smoothing=True, equal_size=False)
    for axis in (0, 1):
        raw_var = np.var(np.diff(centres_and_sides(raw)[axis]))
        smooth_var = np.var(np.diff(centres_and_sides(smooth)[axis]))
        assert smooth_var < 0.2 * raw_var
    assert_square(smooth)


def test_emoca_like_smoothing_is_scipy_savgol_on_centres_and_sides():
    rng = np.random.default_rng(2)
    x1 = 100 + np.cumsum(rng.normal(0, 2, 60))
    width = 100 + np.cumsum(rng.normal(0, 2, 60))
    rects = np.column_stack([x1, np.full(60, 50.0), x1 + width, np.full(60, 130.0)])
    boxes = emoca_like_bboxes(
        rect_landmarks(rects), window_size=1, use_smoothing=True, equal_size=False
    )
    cx, _, side = centres_and_sides(boxes)
    # The original's windows: 25 frames for centres, 15 for sides, order 3.
    np.testing.assert_allclose(cx, savgol_filter(x1 + width / 2, 25, 3), atol=0.51)
    np.testing.assert_allclose(side, savgol_filter(landmark_side(width, 80), 15, 3), atol=0.51)


def test_emoca_like_equal_size_is_the_quantile_of_the_sizes():
    widths = np.linspace(80, 160, 30)
    rects = np.column_stack(
        [np.full(30, 100.0), np.full(30, 50.0), 100 + widths, np.full(30, 150.0)]
    )
    boxes = emoca_like_bboxes(
        rect_landmarks(rects),
        window_size=1,
        use_smoothing=False,
        equal_size=True,
        size_quantile=0.6,
    )
    expected = np.quantile(landmark_side(widths, 100), 0.6)
    np.testing.assert_array_equal(boxes[:, 2] - boxes[:, 0], round(expected))
    assert_square(boxes)


def test_emoca_like_interpolates_faceless_gaps_from_neighbours():
    x1 = 100.0 + 10 * np.arange(10)
    rects = np.column_stack([x1, np.full(10, 50.0), x1 + 100, np.full(10, 130.0)])
    rects[[0, 4, 5, 6]] = np.nan
    boxes = emoca_like_bboxes(
        rect_landmarks(rects), window_size=1, use_smoothing=False, equal_size=False
    )
    cx, cy, side = centres_and_sides(boxes)
    expected_cx = 150.0 + 10 * np.arange(10)
    expected_cx[0] = 160  # before the first face: held at the first face's centre
    np.testing.assert_allclose(cx, expected_cx, atol=0.5)
    np.testing.assert_allclose(cy, 90, atol=0.5)
    np.testing.assert_array_equal(side, 124)


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 10])
def test_emoca_like_works_on_clips_shorter_than_the_smoothing_window(frames):
    x1 = 100.0 + 4 * np.arange(frames)  # linear motion: smoothing must leave it alone
    rects = np.column_stack([x1, np.full(frames, 50.0), x1 + 100, np.full(frames, 130.0)])
    landmarks = rect_landmarks(rects)
    smooth = emoca_like_bboxes(landmarks, use_smoothing=True, equal_size=False)
    plain = emoca_like_bboxes(landmarks, use_smoothing=False, equal_size=False)
    assert smooth.shape == (frames, 4)
    np.testing.assert_allclose(smooth, plain, atol=1)


def test_emoca_like_rejects_a_clip_without_face():
    with pytest.raises(InputRejected, match="no face"):
        emoca_like_bboxes(np.full((30, 68, 2), np.nan))


# --- crops --------------------------------------------------------------------------------


def pattern_frame(height: int = 60, width: int = 80) -> np.ndarray:
    """A smooth, asymmetric RGB pattern with values in 40..215 (no clipping at resize)."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack(
        [40 + 2 * x, 40 + 2.5 * y, 127 + 60 * np.sin(x / 7.0) * np.cos(y / 5.0)], axis=-1
    )
    return np.clip(frame, 0, 255).astype(np.uint8)


def noise_frame(height: int = 60, width: int = 80, seed: int = 4) -> np.ndarray:
    """Random RGB pixels: any change of resampler or of pixel alignment shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_crop_inside_the_frame_is_a_lanczos_resize_of_the_slice():
    frame = noise_frame()
    crop = crop_square(frame, np.array([20, 10, 52, 42]), 48)
    expected = cv2.resize(frame[10:42, 20:52], (48, 48), interpolation=cv2.INTER_LANCZOS4)
    assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, expected)


@pytest.mark.parametrize("side", [24, 48])  # shrinking 1.33x and enlarging 1.5x
def test_crop_with_area_resampling_is_an_area_resize_at_every_scale(side):
    frame = noise_frame()
    crop = crop_square(frame, np.array([20, 10, 52, 42]), side, resample="area")
    expected = cv2.resize(frame[10:42, 20:52], (side, side), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, expected)
    with pytest.raises(ValueError, match="resample must be one of"):
        crop_square(frame, np.array([20, 10, 52, 42]), side, resample="cubic")


@pytest.mark.parametrize("size", [40, 64, 100])
def test_crop_of_the_whole_frame_is_a_lanczos_resize_of_the_frame(size):
    frame = noise_frame(64, 64)
    crop = crop_square(frame, np.array([0, 0, 64, 64]), size)
    expected = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LANCZOS4)
    np.testing.assert_array_equal(crop, expected)


@pytest.mark.parametrize("pad_mode", ["constant", "edge"])
@pytest.mark.parametrize("box", [[-10, -6, 30, 34], [60, 40, 100, 80], [-20, 5, 100, 45]])
def test_crop_past_the_frame_equals_a_resize_of_the_numpy_padded_frame(pad_mode, box):
    frame = noise_frame()
    margin = 50
    padded = np.pad(frame, ((margin, margin), (margin, margin), (0, 0)), mode=pad_mode)
    x1, y1, x2, y2 = np.array(box) + margin
    expected = cv2.resize(padded[y1:y2, x1:x2], (64, 64), interpolation=cv2.INTER_LANCZOS4)
    crop = crop_square(frame, np.array(box), 64, pad_mode=pad_mode)
    np.testing.assert_array_equal(crop, expected)


def test_crop_past_the_top_left_pads_black_and_does_not_shift_the_content():
    frame = np.full((40, 40, 3), 100, np.uint8)
    frame[3, 5] = 255  # a white pixel at x=5, y=3
    crop = crop_square(frame, np.array([-10, -8, 20, 22]), 30)  # 30 px box -> 30 px crop
    assert (crop[:8] == 0).all() and (crop[:, :10] == 0).all()
    assert (crop[8:, 10:] == frame[:22, :20]).all()
    assert tuple(np.argwhere(crop[..., 0] == 255)[0]) == (3 + 8, 5 + 10)
    upscaled = crop_square(frame, np.array([-10, -8, 20, 22]), 60)  # 2x: pixel -> 2x2 block
    brightest = np.unravel_index(np.argmax(upscaled[..., 0]), (60, 60))
    assert brightest[0] in (22, 23) and brightest[1] in (30, 31)


def test_crop_with_edge_padding_repeats_the_border_pixels():
    frame = pattern_frame()
    crop = crop_square(frame, np.array([-5, -5, 15, 15]), 20, pad_mode="edge")
    np.testing.assert_array_equal(crop[5:, 5:], frame[:15, :15])
    np.testing.assert_array_equal(crop[:5, 5:], np.broadcast_to(frame[0, :15], (5, 15, 3)))
    np.testing.assert_array_equal(crop[5:, :5], np.broadcast_to(frame[:15, :1], (15, 5, 3)))
    np.testing.assert_array_equal(crop[:5, :5], np.broadcast_to(frame[0, 0], (5, 5, 3)))


@pytest.mark.parametrize("pad_mode", ["constant", "edge"])
def test_crop_of_a_box_wholly_outside_the_frame_is_all_padding(pad_mode):
    frame = pattern_frame()
    crop = crop_square(frame, np.array([100, 100, 140, 140]), 32, pad_mode=pad_mode)
    expected_value = 0 if pad_mode == "constant" else frame[-1, -1]
    assert (crop == expected_value).all()


def test_crop_size_may_be_height_and_width():
    crop = crop_square(pattern_frame(), np.array([10, 10, 50, 50]), (30, 20))
    assert crop.shape == (30, 20, 3)


def test_large_downscale_averages_pixel_areas_instead_of_aliasing():
    frame = noise_frame(400, 400)
    crop = crop_square(frame, np.array([0, 0, 400, 400]), 50)  # 8x: each pixel = an 8x8 block
    block_means = frame.reshape(50, 8, 50, 8, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(crop, block_means, atol=0.51)


def test_crop_frames_streams_one_crop_per_frame():
    frames = [pattern_frame() + i for i in range(3)]
    boxes = np.array([[10, 10, 40, 40, 1], [0, 0, 30, 30, 1], [-5, -5, 25, 25, 1]])
    crops = list(crop_frames(iter(frames), boxes, size_hw=24))
    assert len(crops) == 3
    for crop, frame, box in zip(crops, frames, boxes):
        np.testing.assert_array_equal(crop, crop_square(frame, box[:4], 24))


@pytest.mark.parametrize("num_frames", [2, 4])
def test_crop_frames_rejects_a_count_mismatch(num_frames):
    frames = (pattern_frame() for _ in range(num_frames))
    boxes = np.tile([0, 0, 20, 20], (3, 1))
    with pytest.raises(ValueError, match="boxes"):
        list(crop_frames(frames, boxes, size_hw=(16, 16)))


# --- blinks -------------------------------------------------------------------------------


def eye_landmarks(left_ratio: float, right_ratio: float, width: float = 30.0) -> np.ndarray:
    """68 points with two horizontal eyes of the given opening/width ratios (others random)."""
    points = np.random.default_rng(3).uniform(0, 200, (68, 2))
    for corners, lids, ratio, x0 in (
        ((36, 39), ((37, 41), (38, 40)), left_ratio, 50.0),
        ((42, 45), ((43, 47), (44, 46)), right_ratio, 120.0),
    ):
        points[corners[0]], points[corners[1]] = (x0, 80.0), (x0 + width, 80.0)
        for (upper, lower), x in zip(lids, (x0 + width / 3, x0 + 2 * width / 3)):
            points[upper] = (x, 80.0 - ratio * width / 2)
            points[lower] = (x, 80.0 + ratio * width / 2)
    return points


def test_eye_openness_of_synthetic_eyes():
    landmarks = np.stack(
        [eye_landmarks(0.3, 0.3), eye_landmarks(0.0, 0.3), eye_landmarks(0.2, 0.1)]
    )
    openness = eye_openness(landmarks)
    assert openness.dtype == np.float32 and openness.shape == (3, 3)
    expected = [[0.3, 0.3, 0.3], [0.0, 0.3, 0.15], [0.2, 0.1, 0.15]]
    np.testing.assert_allclose(openness, expected, atol=1e-6)


def test_eye_openness_uses_the_mean_of_both_lid_pairs_and_is_rotation_invariant():
    points = eye_landmarks(0.3, 0.3)
    points[37, 1] -= 3.0  # left eye: first lid pair now 12 px, second 9 px, width 30 px
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    openness = eye_openness(np.stack([points, points @ rotation.T]))
    np.testing.assert_allclose(openness[:, 0], (12 + 9) / 2 / 30, atol=1e-6)
    np.testing.assert_allclose(openness[:, 1], 0.3, atol=1e-6)


def test_eye_openness_is_nan_where_the_face_is_missing():
    landmarks = np.stack([eye_landmarks(0.3, 0.2), np.full((68, 2), np.nan)])
    openness = eye_openness(landmarks)
    np.testing.assert_allclose(openness[0], [0.3, 0.2, 0.25], atol=1e-6)
    assert np.isnan(openness[1]).all()
