"""Visualizations on a real face clip: overlays, preview mp4, contact sheet, dataset summary.

The clip is the astronaut photo moving slightly (as in test_vision_pipeline), encoded with
ffmpeg and decoded back by the pipeline; the overlays come from the real face model and
head_pose. The system ffprobe (not the pipeline's ffmpeg) is the reference for previews.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from dpl_assets.media.ffmpeg import FFmpegError
from dpl_assets.media.frames import decode_frames
from dpl_assets.nodes.faces import FaceAnalyzer
from dpl_assets.nodes.head_pose import _GENERIC_FACE_3D, _PNP_INDICES, _euler_xyz_degrees, head_pose
from dpl_assets.storage.atomic import TEMP_PREFIX
from dpl_assets.storage.image_stack import ImageStack, ImageStackWriter
from dpl_assets.visualize.contact_sheet import (
    contact_sheet,
    mark_height,
    pick_indices,
    title_height,
    write_png,
)
from dpl_assets.visualize.overlay import (
    DETECTED_COLOR,
    GAP_FILLED_COLOR,
    NOSE_TIP,
    REJECTED_COLOR,
    Overlays,
    banner,
    draw_overlay,
    lighter,
    pose_axes_px,
    project,
    rotation_matrix,
)
from dpl_assets.visualize.preview import write_preview
from dpl_assets.visualize.summary import (
    MAX_LABELLED_VIDEOS,
    PLOT_FILES,
    collect_summary_inputs,
    normalize_reason,
    summarize,
    summary_figures,
)
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_vision_pipeline import moving_astronaut, rotate, write_clip

FPS = 25
FRAMES = 25
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_FACE_FRAME, FILLED_FRAME = 5, 6  # frames whose overlays the fixture edits


@dataclass
class FaceClip:
    source: Path  # the encoded clip
    frames: list[np.ndarray]  # decoded back, 320x320 RGB
    timestamps: np.ndarray
    boxes: np.ndarray  # (N, 5) detector boxes
    landmarks: np.ndarray  # (N, 68, 2)
    head_pose: np.ndarray  # (N, 6)
    overlays: Overlays  # the above with one no-face and one gap-filled frame
    short_wav: Path  # 0.6 s: shorter than the clip
    long_wav: Path  # 2.0 s: longer than the clip


def write_wav(path: Path, seconds: float, frequency: float = 440.0) -> Path:
    time = np.arange(round(seconds * 16_000)) / 16_000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * frequency * time), 16_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> FaceClip:
    folder = tmp_path_factory.mktemp("face clip")
    source = write_clip(folder / "real face.mp4", moving_astronaut(FRAMES), fps=FPS)
    decoded = list(decode_frames(source))
    frames = [frame.rgb for frame in decoded]
    with FaceAnalyzer() as analyzer:
        result = analyzer.analyze(frames)
    assert result.detected.all()
    poses = head_pose(result.landmarks, (320, 320))
    mask = np.ones(FRAMES, np.uint8)
    boxes, landmarks, pose_rows = result.raw_bboxes.copy(), result.landmarks.copy(), poses.copy()
    for array in (boxes, landmarks, pose_rows):
        array[NO_FACE_FRAME] = np.nan
    mask[NO_FACE_FRAME], mask[FILLED_FRAME] = 0, 2
    return FaceClip(
        source=source,
        frames=frames,
        timestamps=np.array([frame.time_s for frame in decoded]),
        boxes=result.raw_bboxes,
        landmarks=result.landmarks,
        head_pose=poses,
        overlays=Overlays(boxes=boxes, landmarks=landmarks, head_pose=pose_rows, face_mask=mask),
        short_wav=write_wav(folder / "short.wav", 0.6),
        long_wav=write_wav(folder / "long.wav", 2.0),
    )


def ffprobe_streams(path: Path) -> dict[str, dict]:
    """The system ffprobe's first video and audio stream, frames counted by decoding."""
    out = subprocess.run(
        [media._system_binary("ffprobe"), "-v", "error", "-count_frames", "-print_format",
         "json", "-show_streams", "file:" + str(path.absolute())],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    streams = json.loads(out)["streams"]
    return {kind: next((s for s in streams if s["codec_type"] == kind), {}) for kind in
            ("video", "audio")}  # fmt: skip


# --------------------------------------------------------------------------------------
# Preview
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", ["list", "frame_count", "generator"])
@pytest.mark.parametrize("audio", ["short", "long"])
def test_preview_has_the_source_frames_and_fitted_audio(clip, tmp_path, length, audio):
    wav = clip.short_wav if audio == "short" else clip.long_wav
    frames = clip.frames if length == "list" else (frame for frame in clip.frames)
    # Overlays would give the length away: the generator case runs without them.
    overlays = None if length == "generator" else clip.overlays
    frame_count = FRAMES if length == "frame_count" else None
    out = tmp_path / "preview.mp4"

    summary = write_preview(out, frames, fps=FPS, wav=wav, overlays=overlays,
                            frame_count=frame_count)  # fmt: skip

    source, preview = ffprobe_streams(clip.source), ffprobe_streams(out)
    assert summary.frames == FRAMES and summary.seconds == pytest.approx(1.0)
    assert summary.has_audio
    assert int(preview["video"]["nb_read_frames"]) == int(source["video"]["nb_read_frames"])
    assert float(preview["video"]["duration"]) == pytest.approx(
        float(source["video"]["duration"]), abs=1e-3
    )
    assert preview["video"]["codec_name"] == "h264"
    assert preview["video"]["pix_fmt"] == "yuv420p"
    assert preview["audio"]["codec_name"] == "aac"
    assert int(preview["audio"]["sample_rate"]) == 16_000
    # Known length: padded or cut to the video exactly. Unknown: the wav as it is.
    wav_seconds = soundfile.info(wav).duration
    expected = wav_seconds if length == "generator" else 1.0
    assert float(preview["audio"]["duration"]) == pytest.approx(expected, abs=0.002)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def onset_s(audio: np.ndarray, rate: int = 16_000, threshold: float = 0.05) -> float:
    """First time (s) a 5 ms block of ``audio`` has an RMS above ``threshold``."""
    block = rate // 200
    usable = audio[: audio.size // block * block].reshape(-1, block)
    loud = np.flatnonzero(np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1)) > threshold)
    return float(loud[0] * block / rate) if loud.size else float("inf")


def test_preview_audio_starts_at_the_first_frames_time_and_pads_past_the_audio_end(clip, tmp_path):
    # The wav on the container clock: silence, a 1 kHz beep at 1.00-1.10 s, silence, ending
    # at 1.40 s. The frames (1 s at 25 fps) start at 0.60 s on that clock, as a video
    # stream that starts late does; so the preview plays the wav from 0.60 s: the beep at
    # 0.40 s, the audio's end at 0.80 s, then silence to the video's end at 1.00 s.
    rate, start = 16_000, 0.6
    time = np.arange(round(1.4 * rate)) / rate
    beep = np.where((time >= 1.0) & (time < 1.1), 0.5 * np.sin(2 * np.pi * 1000 * time), 0.0)
    wav = tmp_path / "beep at 1 s.wav"
    soundfile.write(wav, beep, rate, subtype="PCM_16")
    out = tmp_path / "late video.mp4"

    write_preview(out, clip.frames, fps=FPS, wav=wav, audio_start_s=start)

    heard = media.reference_audio(out)  # the system ffmpeg's decode, 16 kHz mono
    assert onset_s(heard) == pytest.approx(1.0 - start, abs=0.006)
    assert float(ffprobe_streams(out)["audio"]["duration"]) == pytest.approx(1.0, abs=0.002)
    after_beep = heard[round(0.52 * rate) :]  # past the beep: the wav's silence, then padding
    assert after_beep.size >= round(0.46 * rate) and np.max(np.abs(after_beep)) < 0.01
    with pytest.raises(ValueError, match="audio_start_s"):
        write_preview(tmp_path / "x.mp4", clip.frames, fps=FPS, wav=wav, audio_start_s=-0.1)


def test_frame_count_must_agree(clip, tmp_path):
    with pytest.raises(ValueError, match="disagree"):
        write_preview(tmp_path / "p.mp4", clip.frames, fps=FPS, frame_count=FRAMES + 1)
    with pytest.raises(ValueError, match=f"{FRAMES - 1} frames given where {FRAMES}"):
        write_preview(tmp_path / "p.mp4", iter(clip.frames[1:]), fps=FPS, frame_count=FRAMES)
    assert list(tmp_path.iterdir()) == []


def test_preview_pads_odd_sizes_by_one_pixel(clip, tmp_path):
    odd = [np.ascontiguousarray(frame[:317, :319]) for frame in clip.frames]
    out = tmp_path / "odd.mp4"

    summary = write_preview(out, odd, fps=FPS)

    video = ffprobe_streams(out)["video"]
    assert (int(video["width"]), int(video["height"])) == (320, 318)
    assert int(video["nb_read_frames"]) == FRAMES == summary.frames
    assert not summary.has_audio and not ffprobe_streams(out)["audio"]


@pytest.mark.parametrize("size", ["even", "odd"])
def test_preview_keeps_the_source_colours(clip, tmp_path, size):
    # Even sizes as they are, odd ones padded by ffmpeg: either way the decoded preview is
    # the frames, at the encoder's loss alone.
    frames = (
        clip.frames
        if size == "even"
        else [np.ascontiguousarray(f[:317, :319]) for f in clip.frames]
    )
    out = tmp_path / "colours.mp4"
    write_preview(out, frames, fps=FPS)
    decoded = [
        frame.rgb[: f.shape[0], : f.shape[1]]
        for frame, f in zip(decode_frames(out), frames, strict=True)
    ]
    source, got = np.stack(frames).astype(np.float64), np.stack(decoded).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((got - source) ** 2))
    assert psnr > 32, psnr  # 34.2 dB here
    # A wrong matrix or range would shift colours by several levels; -0.7..-1.3 here.
    assert np.abs(got.mean(axis=(0, 1, 2)) - source.mean(axis=(0, 1, 2))).max() < 2.0


def test_preview_keeps_colour_detail_one_pixel_wide(tmp_path):
    # Red lines 1 px wide at odd columns (x = 1, 5, 9...) on grey: a quarter of the pixels,
    # so the frame's mean R - G is 255 / 4. yuv420p keeps one chroma sample per 2x2 block:
    # filtered (ffmpeg's scaler), each block's chroma is half the line's and the mean
    # colour survives; point-sampled from the block's top-left pixel (OpenCV's
    # COLOR_RGB2YUV_I420), every sample misses the lines, which come out grey (R - G ~ 0).
    frame = np.full((64, 64, 3), 128, np.uint8)
    frame[:, 1::4] = (255, 0, 0)
    out = tmp_path / "lines.mp4"
    write_preview(out, [frame] * FRAMES, fps=FPS)
    decoded = np.stack([f.rgb for f in decode_frames(out)]).astype(np.float64)
    assert decoded.shape == (FRAMES, 64, 64, 3)
    redness = (decoded[..., 0] - decoded[..., 1]).mean()
    # 63.2 here; point-sampled 0.0 (2a568f8..27f3177), or ~113 with the lines on the
    # sampled columns: neither keeps the frame's colour.
    assert abs(redness - 255 / 4) < 255 / 4 * 0.25, redness


# A child process: its getrusage(RUSAGE_CHILDREN) peak is this one ffmpeg's alone.
ENCODER_PEAK_SCRIPT = """
import resource, sys
from fractions import Fraction
from pathlib import Path
import numpy as np
from dpl_assets.visualize.mp4_pipe import mp4_pipe
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (135, 240, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
with mp4_pipe(Path(sys.argv[1]), (1920, 1080), Fraction(25), what="test") as write:
    for i in range(40):
        write(np.roll(base, 4 * i, axis=1))
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
"""


def test_a_1080p_preview_encoder_stays_under_its_memory_budget(tmp_path):
    # x264's defaults at veryfast hold ~20 frames (360 MB peak here for ffmpeg);
    # the preview's settings ~257 MB: the peak of the 60-min clip's run (long_clip.py).
    out = tmp_path / "big.mp4"
    peak_mb = int(
        subprocess.run(
            [sys.executable, "-c", ENCODER_PEAK_SCRIPT, str(out)],
            capture_output=True, check=True, text=True,
        ).stdout.split()[-1]
    )  # fmt: skip
    assert peak_mb < 310
    video = ffprobe_streams(out)["video"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1920, 1080)
    assert int(video["nb_read_frames"]) == 40


def test_preview_frames_carry_the_overlay(clip, tmp_path):
    out = tmp_path / "preview.mp4"
    write_preview(out, clip.frames, fps=FPS, overlays=clip.overlays)
    decoded = [frame.rgb for frame in decode_frames(out)]
    assert len(decoded) == FRAMES

    def change(index: int, points: np.ndarray) -> float:
        """Mean |preview - source| (summed over RGB) at these pixels of frame ``index``."""
        x, y = np.floor(points).astype(int).T
        diff = np.abs(decoded[index].astype(int) - clip.frames[index].astype(int)).sum(axis=2)
        return float(diff[y, x].mean())

    far = np.array([[20.0, 300.0], [300.0, 300.0], [160.0, 310.0], [300.0, 200.0]])
    label = np.array([[x, y] for x in range(4, 80, 2) for y in range(4, 24, 2)], float)
    marked = change(0, clip.landmarks[0])
    assert marked > 150  # the dots survive H.264 (measured ~300)
    assert change(0, far) < 20  # compression noise only (measured ~12)
    # The no-face frame: the face is unmarked (H.264 leaves some of the neighbours'
    # dots: measured ~60 at 25 fps) and the "no face" label is there.
    assert change(NO_FACE_FRAME, clip.landmarks[NO_FACE_FRAME]) < marked / 3
    assert change(NO_FACE_FRAME, label) > 2 * change(0, label)


def test_preview_failure_leaves_the_previous_file_and_no_temp(clip, tmp_path):
    out = tmp_path / "preview.mp4"
    out.write_bytes(b"previous")
    changing = [clip.frames[0], clip.frames[1][:200]]
    with pytest.raises(ValueError, match=r"preview\.mp4: frame 1 has shape \(200, 320, 3\)"):
        write_preview(out, changing, fps=FPS)

    not_audio = tmp_path / "not audio.wav"
    not_audio.write_bytes(b"this is not a wav file" * 100)
    with pytest.raises(FFmpegError, match=r"preview\.mp4") as failure:
        write_preview(out, clip.frames, fps=FPS, wav=not_audio)
    assert "not audio.wav" in str(failure.value)  # ffmpeg's own stderr tail is included

    with pytest.raises(IndexError):  # more frames than overlays
        write_preview(out, (f for f in clip.frames + clip.frames[:1]), fps=FPS,
                      overlays=clip.overlays)  # fmt: skip
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not audio.wav", "preview.mp4"]


def test_preview_of_a_new_file_that_fails_leaves_nothing(clip, tmp_path):
    out = tmp_path / "new.mp4"
    with pytest.raises(ValueError):
        write_preview(out, [clip.frames[0], clip.frames[1][:, :100]], fps=FPS)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# Overlay
# --------------------------------------------------------------------------------------


def changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


def test_overlay_marks_the_landmarks_and_stays_near_the_face(clip):
    frame = clip.frames[0]
    box, points = clip.boxes[0], clip.landmarks[0]
    drawn = draw_overlay(frame, box=box, landmarks=points, head_pose=clip.head_pose[0],
                         face_mask_code=1)  # fmt: skip

    mask = changed(frame, drawn)
    x, y = np.floor(points).astype(int).T
    assert mask[y, x].all()  # every landmark's pixel is painted
    assert np.abs(drawn[y, x].astype(int) - DETECTED_COLOR).sum(axis=1).mean() < 150
    ys, xs = np.nonzero(mask)
    margin = 4  # line width and anti-aliasing around the box
    assert xs.min() >= box[0] - margin and xs.max() <= box[2] + margin
    assert ys.min() >= box[1] - margin and ys.max() <= box[3] + margin
    assert frame is not drawn and not changed(frame, clip.frames[0].copy()).any()


def test_gap_filled_frames_use_another_colour(clip):
    frame, points = clip.frames[0], clip.landmarks[0]
    detected = draw_overlay(frame, landmarks=points, face_mask_code=1)
    filled = draw_overlay(frame, landmarks=points, face_mask_code=2)
    x, y = np.floor(points).astype(int).T

    def distance(image: np.ndarray, color: tuple[int, int, int]) -> float:
        return float(np.abs(image[y, x].astype(int) - color).sum(axis=1).mean())

    assert distance(filled, GAP_FILLED_COLOR) < distance(filled, DETECTED_COLOR)
    assert distance(detected, DETECTED_COLOR) < distance(detected, GAP_FILLED_COLOR)
    assert changed(filled, detected)[:40, :100].any()  # the "gap filled" label


def test_nan_overlays_draw_only_a_small_label(clip):
    frame = clip.frames[0]
    nothing = draw_overlay(frame)
    assert not changed(frame, nothing).any()

    nan = draw_overlay(frame, box=np.full(5, np.nan), landmarks=np.full((68, 2), np.nan),
                       head_pose=np.full(6, np.nan), face_mask_code=0)  # fmt: skip
    ys, xs = np.nonzero(changed(frame, nan))
    assert xs.size > 0 and xs.max() < 120 and ys.max() < 40  # "no face", top-left

    # Partial NaN: the finite points are drawn, broken contours do not crash.
    partial = clip.landmarks[0].copy()
    partial[::3] = np.nan
    drawn = draw_overlay(frame, landmarks=partial, head_pose=np.array([5, 0, 0, *[np.nan] * 3]))
    x, y = np.floor(partial[1::3]).astype(int).T
    assert changed(frame, drawn)[y, x].all()


def test_overlays_check_their_shapes():
    with pytest.raises(ValueError, match="disagree"):
        Overlays(boxes=np.zeros((3, 4)), face_mask=np.zeros(4))
    with pytest.raises(ValueError, match="landmarks"):
        Overlays(landmarks=np.zeros((3, 5, 2)))
    assert Overlays().frame_count is None


# --------------------------------------------------------------------------------------
# Head-pose axes
# --------------------------------------------------------------------------------------


def test_rotation_matrix_inverts_head_poses_angle_conversion():
    rng = np.random.default_rng(7)
    for yaw, pitch, roll in zip(
        rng.uniform(-85, 85, 50),
        rng.uniform(-170, 170, 50),
        rng.uniform(-170, 170, 50),
        strict=True,
    ):
        matrix = rotation_matrix(yaw, pitch, roll)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
        pitch_back, yaw_back, roll_z = _euler_xyz_degrees(matrix)
        # head_pose stores [yaw, pitch, -roll_z].
        np.testing.assert_allclose([yaw_back, pitch_back, -roll_z], [yaw, pitch, roll],
                                   atol=1e-9)  # fmt: skip


def reprojection_error_px(landmarks: np.ndarray, pose: np.ndarray, roll_sign: float = 1) -> float:
    """Mean distance between the PnP landmarks and the generic face placed by ``pose``."""
    model = _GENERIC_FACE_3D * np.array([1.0, -1.0, -1.0])  # as head_pose flips it
    rotation = rotation_matrix(pose[0], pose[1], roll_sign * pose[2])
    pixels = project(model @ rotation.T + pose[3:], (320, 320))
    return float(np.linalg.norm(pixels - landmarks[_PNP_INDICES], axis=1).mean())


def test_pose_places_the_generic_face_on_the_real_landmarks(clip):
    # Same camera and conventions as head_pose: its fit lands back on the landmarks.
    assert reprojection_error_px(clip.landmarks[0], clip.head_pose[0].astype(float)) < 6
    # On a face rolled 30 degrees, the wrong roll sign would miss by far.
    turned = np.ascontiguousarray(rotate(clip.frames[0], 30))
    with FaceAnalyzer() as analyzer:
        landmarks = analyzer.analyze([turned]).landmarks
    pose = head_pose(landmarks, (320, 320))[0].astype(float)
    assert pose[2] > 20
    right = reprojection_error_px(landmarks[0], pose)
    assert right < 6
    assert reprojection_error_px(landmarks[0], pose, roll_sign=-1) > max(15, 3 * right)


def test_axes_follow_the_pose_on_screen():
    size = (320, 240)
    frontal = pose_axes_px(np.array([0, 0, 0, 0, 0, 2000.0]), size)
    assert frontal is not None
    origin, x_end, y_end, z_end = frontal
    np.testing.assert_allclose(origin, [160, 120])  # the principal point
    assert x_end[0] > origin[0] + 10 and x_end[1] == pytest.approx(origin[1])  # right
    assert y_end[1] < origin[1] - 10 and y_end[0] == pytest.approx(origin[0])  # up
    np.testing.assert_allclose(z_end, origin, atol=1e-9)  # straight at the camera

    # roll > 0 turns the face counter-clockwise on screen: its x axis rises.
    rolled = pose_axes_px(np.array([0, 0, 30, 0, 0, 2000.0]), size)
    assert rolled is not None
    dx, dy = rolled[1] - rolled[0]
    assert np.degrees(np.arctan2(-dy, dx)) == pytest.approx(30, abs=0.5)
    # Anchored at a landmark; orthographic without translation; None without angles.
    anchored = pose_axes_px(np.array([0, 0, 0, 0, 0, 2000.0]), size, anchor=np.array([50, 60]))
    assert anchored is not None
    np.testing.assert_allclose(anchored[0], [50, 60])
    ortho = pose_axes_px(np.array([0, 0, 0, *[np.nan] * 3]), size, anchor=np.array([50, 60]))
    assert ortho is not None and ortho[1][0] > 50
    assert pose_axes_px(np.full(6, np.nan), size) is None


def test_axes_start_at_the_nose_tip(clip):
    frame, points = clip.frames[0], clip.landmarks[0]
    axes = pose_axes_px(clip.head_pose[0], (320, 320), anchor=points[NOSE_TIP])
    assert axes is not None
    drawn = draw_overlay(frame, head_pose=clip.head_pose[0], landmarks=points)
    for end in axes[1:3]:  # x and y ends (z points near the camera: short)
        x, y = np.floor(axes[0] + 0.8 * (end - axes[0])).astype(int)
        assert changed(frame, drawn)[y, x]


# --------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------


def test_pick_indices_are_evenly_spaced_and_distinct():
    assert pick_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert pick_indices(3, 12).tolist() == [0, 1, 2]
    for total in range(1, 40):
        picked = pick_indices(total, 12)
        assert len(set(picked.tolist())) == picked.size == min(12, total)
        assert picked.min() >= 0 and picked.max() < total


def test_contact_sheet_from_an_image_stack_is_a_valid_png(clip, tmp_path):
    stack_path = tmp_path / "images" / "real face.h5"
    with ImageStackWriter(stack_path, "images", fps=FPS) as writer:
        for frame, time_s in zip(clip.frames, clip.timestamps, strict=True):
            writer.append(frame, float(time_s))
    tile = 128
    with ImageStack(stack_path) as stack:
        sheet = contact_sheet(stack, count=6, columns=4, tile_width=tile,
                              overlays=clip.overlays, title="real face")  # fmt: skip
    # 6 tiles, 4 per row -> 2 rows of square tiles, under the title band.
    assert sheet.shape == (title_height(tile) + 2 * tile, 4 * tile, 3)
    assert sheet.dtype == np.uint8
    out = tmp_path / "sheets" / "real face.png"
    write_png(out, sheet)

    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert image.size == (4 * tile, title_height(tile) + 2 * tile)
        np.testing.assert_array_equal(np.asarray(image), sheet)  # lossless
    assert [p.name for p in out.parent.iterdir()] == ["real face.png"]


def test_contact_sheet_labels_and_overlays_its_tiles(clip):
    plain = contact_sheet(clip.frames, count=4, columns=2, tile_width=160)
    drawn = contact_sheet(clip.frames, count=4, columns=2, tile_width=160,
                          overlays=clip.overlays, timestamps=clip.timestamps)  # fmt: skip
    assert plain.shape == drawn.shape == (320, 320, 3)  # 2 x 2 tiles, half size, no title
    # Frame 3 (top-left tile): its landmarks, halved, are painted.
    x, y = np.floor(clip.landmarks[pick_indices(FRAMES, 4)[0]] / 2).astype(int).T
    assert changed(plain, drawn)[y, x].mean() > 0.9
    # The time label is longer than the index label.
    assert changed(plain, drawn)[150:160, 40:100].any()


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def test_normalize_reason_groups_causes():
    assert normalize_reason("face in 37% of frames (min_face_coverage 50%)") == (
        "face in N% of frames"
    )
    assert normalize_reason("face in 12% of frames (min_face_coverage 50%)") == (
        "face in N% of frames"
    )
    assert normalize_reason("/v/a b.mp4: truncated: the header promises 4.00 s") == "truncated"
    assert (
        normalize_reason(
            "/v/x.mp4: cannot open as a media container (Invalid data: x); header lost"
        )
        == "cannot open as a media container; header lost"
    )
    assert normalize_reason("no face: no face detected in any frame") == "no face"
    wav2vec = "clip 7: 12 samples is shorter than one wav2vec frame (400 samples)"
    assert normalize_reason(wav2vec, subjects=["clip 7"]) == (
        "N samples is shorter than one wav2vec frame"
    )


def write_outputs(out: Path, video_id: str, duration: float, coverage: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    (out / "probe").mkdir(parents=True, exist_ok=True)
    (out / "faces").mkdir(exist_ok=True)
    (out / "volume").mkdir(exist_ok=True)
    (out / "wav2vec").mkdir(exist_ok=True)
    (out / "probe" / f"{video_id}.json").write_text(json.dumps({"duration_s": duration}))
    (out / "faces" / f"{video_id}.json").write_text(json.dumps({"coverage": coverage}))
    volume = rng.uniform(0, 0.2, 100).astype(np.float32)
    features = rng.normal(size=(100, 16)).astype(np.float32)
    np.save(out / "volume" / f"{video_id}.npy", volume)
    np.save(out / "wav2vec" / f"{video_id}.npy", features)
    return {"volume": volume, "wav2vec": features}


def test_summary_reads_the_outputs_and_writes_plots(tmp_path):
    out = tmp_path / "out"
    arrays = write_outputs(out, "a", 12.5, 0.96, 1)
    write_outputs(out, "b", 30.0, 1.0, 2)
    (out / "probe" / "broken.json").write_text("{not json")
    report = {
        "summary": {},
        "videos": [
            {"video_id": "a", "source": "/in/a.mp4", "status": "processed", "reason": None,
             "outputs": {"volume": str(out / "volume" / "a.npy")}},
            {"video_id": "b", "source": "/in/b.mp4", "status": "processed", "reason": None,
             "outputs": {}},
            {"video_id": "c", "source": "/in/c.mp4", "status": "rejected", "outputs": {},
             "reason": "face in 37% of frames (min_face_coverage 50%)"},
            {"video_id": "d", "source": "/in/d.mp4", "status": "rejected", "outputs": {},
             "reason": "face in 12% of frames (min_face_coverage 50%)"},
            {"video_id": "e", "source": "/in/e.mp4", "status": "rejected", "outputs": {},
             "reason": "/in/e.mp4: no audio stream"},
            {"video_id": "broken", "source": "/in/broken.mp4", "status": "failed",
             "reason": "not produced: wav (see the run log)", "outputs": {}},
        ],
    }  # fmt: skip

    records = collect_summary_inputs(out, report)

    by_id = {r["video_id"]: r for r in records}
    assert by_id["a"]["duration_s"] == 12.5 and by_id["a"]["face_coverage"] == 0.96
    assert by_id["a"]["volume_mean"] == pytest.approx(arrays["volume"].mean(), rel=1e-6)
    assert by_id["a"]["volume_std"] == pytest.approx(arrays["volume"].std(), rel=1e-5)
    norms = np.linalg.norm(arrays["wav2vec"].astype(np.float64), axis=1)
    assert by_id["a"]["wav2vec_norm_mean"] == pytest.approx(norms.mean())
    assert by_id["a"]["wav2vec_norm_std"] == pytest.approx(norms.std())
    assert by_id["c"]["face_coverage"] == pytest.approx(0.37)  # from the reason
    assert by_id["e"]["duration_s"] is None and by_id["e"]["volume_mean"] is None
    assert by_id["broken"]["duration_s"] is None
    assert by_id["broken"]["unreadable"] == [str(out / "probe" / "broken.json")]

    plots = tmp_path / "summary"
    markdown = summarize(records, plots)

    assert sorted(p.name for p in plots.iterdir()) == sorted(PLOT_FILES.values())
    for name in PLOT_FILES.values():
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size[0] > 300 and image.size[1] > 200
    assert "| processed | 2 |" in markdown and "| rejected | 3 |" in markdown
    assert "| failed | 1 |" in markdown and "| **total** | 6 |" in markdown
    assert "| face in N% of frames | 2 |" in markdown
    assert "| no audio stream | 1 |" in markdown
    for name in PLOT_FILES.values():
        assert (plots / name).resolve().as_uri() in markdown
    assert "1 output file(s) could not be read" in markdown


def test_summary_of_nothing_still_writes_every_plot(tmp_path):
    markdown = summarize([], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOT_FILES.values())
    assert "| **total** | 0 |" in markdown


# --------------------------------------------------------------------------------------
# Crop box and detector box; the banner of a rejected video
# --------------------------------------------------------------------------------------


def near(image: np.ndarray, color: tuple[int, int, int], tolerance: int = 40) -> np.ndarray:
    """Pixels of ``image`` within ``tolerance`` (per channel) of ``color``."""
    return (np.abs(image.astype(int) - np.array(color)) <= tolerance).all(axis=-1)


def test_overlay_draws_the_crop_box_solid_and_the_detector_box_lighter():
    # 640 px: the crop box is 2 px thick, the detector box 1 px; the detector's edges sit
    # on pixel centres (x.5), so its 1 px line covers one row without anti-aliasing.
    grey = np.full((640, 640, 3), 60, np.uint8)
    crop, detector = np.array([80, 60, 400, 440]), np.array([120.5, 100.5, 360.5, 340.5, 0.9])
    drawn = draw_overlay(grey, box=crop, detector_box=detector, face_mask_code=1)

    # Crop box: solid in the detected colour along its whole bottom edge.
    crop_bottom = drawn[crop[3] - 1, crop[0] + 5 : crop[2] - 5]
    assert near(crop_bottom, DETECTED_COLOR).mean() > 0.95
    # Detector box: dashed (about half of its bottom edge painted), in the paler colour.
    row = drawn[int(detector[3]), 130:350]
    painted = near(row, lighter(DETECTED_COLOR))
    assert 0.3 < painted.mean() < 0.8
    assert (painted | (row == 60).all(axis=1)).mean() > 0.8  # paler colour or untouched
    assert not near(row, DETECTED_COLOR, 20).any()  # never the crop box's colour
    assert min(lighter(DETECTED_COLOR)) > min(DETECTED_COLOR)  # towards white
    # Nothing else drawn: far from both boxes the frame is untouched.
    assert (drawn[200:300, 200:300] == 60).all()


DASHED_BOXES = [[120.5, 100.5, 360.5, 340.5], [33.3, 47.9, 301.7, 255.2], [-20, -10, 100, 90],
                [50, 50, 50, 200], [70, 70, 70, 70]]  # fmt: skip


@pytest.mark.parametrize("side", [480, 640, 1920])
@pytest.mark.parametrize("rect", DASHED_BOXES)
def test_dashed_box_paints_the_pixels_of_its_dashes_drawn_one_by_one(side, rect):
    """The dashed box, drawn in one call, paints what OpenCV's own line paints for each
    dash: dashes of max(4, 3 x thickness + 3) px from each side's first corner, gaps of
    the same length, half the box's thickness; nothing for a side of length 0."""
    import cv2

    from dpl_assets.visualize.drawing import SHIFT, Style, draw_dashed_box

    style = Style.for_frame(side, side)
    drawn = np.full((side, side, 3), 60, np.uint8)
    draw_dashed_box(drawn, np.array(rect, np.float64), (10, 200, 90), style)

    expected = np.full_like(drawn, 60)
    dash = max(4.0, 3.0 * style.thickness + 3)
    x1, y1, x2, y2 = rect

    def fixed(x: float, y: float) -> tuple[int, int]:  # pixel k covers [k, k+1)
        return round((x - 0.5) * 2**SHIFT), round((y - 0.5) * 2**SHIFT)

    for (ax, ay), (bx, by) in [((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))]:  # fmt: skip
        length = float(np.hypot(bx - ax, by - ay))
        for start in np.arange(0.0, length, 2 * dash):
            end = min(start + dash, length)
            f0, f1 = start / length, end / length
            cv2.line(
                expected,
                fixed(ax + (bx - ax) * f0, ay + (by - ay) * f0),
                fixed(ax + (bx - ax) * f1, ay + (by - ay) * f1),
                (10, 200, 90), max(1, style.thickness // 2), cv2.LINE_AA, SHIFT,
            )  # fmt: skip
    assert (expected != 60).any() == (rect[0] != rect[2] or rect[1] != rect[3])
    np.testing.assert_array_equal(drawn, expected)


def test_overlays_carry_detector_boxes_and_check_their_shape(clip):
    boxes = np.round(clip.boxes[:, :4]).astype(np.int64)
    overlays = Overlays(boxes=boxes, detector_boxes=clip.boxes)
    assert overlays.frame_count == FRAMES
    with pytest.raises(ValueError, match="detector_boxes"):
        Overlays(detector_boxes=np.zeros((FRAMES, 3)))
    with pytest.raises(ValueError, match="disagree"):
        Overlays(boxes=boxes, detector_boxes=clip.boxes[:3])


def test_banner_is_red_wraps_its_text_and_keeps_to_its_lines():
    short = banner(320, "REJECTED: no audio stream")
    long = banner(320, "REJECTED: " + "; ".join(["no face: no face detected in any frame"] * 3))
    cut = banner(320, "word " * 400, max_lines=3)
    for band in (short, long, cut):
        assert band.shape[1] == 320 and band.dtype == np.uint8
        assert near(band, REJECTED_COLOR, 10).mean() > 0.6  # red, with white text on it
        assert near(band, (255, 255, 255), 60).any()
    assert long.shape[0] > short.shape[0]  # wrapped onto more lines
    assert cut.shape[0] < 4 * short.shape[0]  # at most 3 lines
    with pytest.raises(ValueError, match="width"):
        banner(0, "x")


def test_contact_sheet_of_a_rejected_video_carries_the_banner_under_the_title(clip):
    mark = "REJECTED: no audio stream"
    plain = contact_sheet(clip.frames, count=4, columns=2, tile_width=160, title="clip")
    marked = contact_sheet(clip.frames, count=4, columns=2, tile_width=160, title="clip",
                           mark=mark)  # fmt: skip
    band = mark_height(2, 160, mark)
    top = title_height(160)
    assert marked.shape[0] == plain.shape[0] + band
    assert near(marked[top : top + band], REJECTED_COLOR, 10).mean() > 0.6
    assert near(plain[top : top + band], REJECTED_COLOR, 10).mean() < 0.05
    np.testing.assert_array_equal(marked[:top], plain[:top])  # the same title
    np.testing.assert_array_equal(marked[top + band :], plain[top:])  # the same tiles


def test_preview_of_a_rejected_video_carries_the_banner_on_every_frame(clip, tmp_path):
    mark = "REJECTED: no audio stream; no face: no face detected in any frame"
    out = tmp_path / "rejected.mp4"
    write_preview(out, clip.frames, fps=FPS, overlays=clip.overlays, mark=mark)
    band = banner(320, mark).shape[0]
    decoded = [frame.rgb for frame in decode_frames(out)]
    assert len(decoded) == FRAMES
    for frame, source in zip(decoded, clip.frames, strict=True):
        assert near(frame[-band:], REJECTED_COLOR, 40).mean() > 0.5  # H.264 blurs the text
        assert near(source[-band:], REJECTED_COLOR, 40).mean() < 0.05
        # Above the banner, the frame (with its overlays) is what it was.
        assert np.abs(frame[: -band - 8].astype(int) - source[: -band - 8]).mean() < 12


# --------------------------------------------------------------------------------------
# The summary's plotted numbers
# --------------------------------------------------------------------------------------


def legend_texts(figure) -> list[str]:
    [axes] = figure.axes
    legend = axes.get_legend()
    return [text.get_text() for text in legend.get_texts()] if legend else []


def errorbar_ranges(axes) -> list[tuple[float, float, float]]:
    """(low, marker, high) of each error bar drawn on ``axes``, in x order."""
    [container] = axes.containers
    marker_line, _, (bars,) = container
    xs, ys = marker_line.get_data()
    ranges = {float(seg[0][0]): (float(seg[0][1]), float(seg[1][1])) for seg in bars.get_segments()}
    return [
        (ranges[float(x)][0], float(y), ranges[float(x)][1]) for x, y in zip(xs, ys, strict=True)
    ]


def summary_videos() -> list[dict]:
    """Records as collect_summary_inputs makes them: 2 processed, 3 rejected (one without
    a duration, one for two reasons), 1 failed without numbers."""

    def video(video_id, status, duration=None, coverage=None, reasons=(), volume=None):
        record = {"video_id": video_id, "source": f"/in/{video_id}.mp4", "status": status,
                  "reason": "; ".join(reasons) or None, "reasons": list(reasons),
                  "duration_s": duration, "face_coverage": coverage}  # fmt: skip
        if volume is not None:
            values = np.asarray(volume, np.float64)
            record.update(
                volume_p10=float(np.percentile(values, 10)), volume_median=float(np.median(values)),
                volume_p90=float(np.percentile(values, 90)), volume_mean=float(values.mean()),
                volume_std=float(values.std()),
            )  # fmt: skip
        return record

    rng = np.random.default_rng(0)
    # Skewed loudness: mostly near-silence, some loud steps; mean - std < 0.
    skewed = np.concatenate([np.full(80, 0.001), rng.uniform(0.1, 0.4, 20)])
    return [
        video("talk b", "processed", 30.0, 1.0, volume=skewed),
        video("talk a", "processed", 12.5, 0.96, volume=skewed * 2),
        video("film", "rejected", 2.0, 0.0,
              reasons=["/in/film.mp4: no audio stream", "no face: no face detected"]),
        video("shy", "rejected", 5.0, 0.37, reasons=["face in 37% of frames (min 50%)"]),
        video("empty", "rejected", reasons=["/in/empty.mp4: zero-byte file"]),
        video("broken", "failed"),
    ]  # fmt: skip


def test_duration_and_coverage_legends_count_every_video_of_each_status():
    videos = summary_videos()
    figures = summary_figures(videos)
    assert legend_texts(figures["durations"]) == [
        "processed: 2", "rejected: 3 (1 without a duration)", "failed: 1 (1 without a duration)",
    ]  # fmt: skip
    assert legend_texts(figures["face_coverage"]) == [
        "processed: 2", "rejected: 3 (1 without face data)", "failed: 1 (1 without face data)",
    ]  # fmt: skip
    # The bars hold exactly the videos that have a duration.
    [axes] = figures["durations"].axes
    heights = sum(patch.get_height() for patch in axes.patches)
    assert heights == sum(v["duration_s"] is not None for v in videos) == 4


def test_rejections_plot_counts_a_video_under_each_of_its_reasons():
    [axes] = summary_figures(summary_videos())["rejections"].axes
    labels = [tick.get_text() for tick in axes.get_yticklabels()]
    counts = dict(zip(labels, (patch.get_width() for patch in axes.patches), strict=True))
    assert counts == {
        "no audio stream": 1, "no face": 1, "face in N% of frames": 1, "zero-byte file": 1,
    }  # fmt: skip


def test_feature_panels_label_videos_by_id_and_never_go_below_zero():
    videos = summary_videos()
    figure = summary_figures(videos)["features"]
    [axes] = figure.axes  # volume only: no empty wav2vec panel
    assert axes.get_title().startswith("Volume")
    # Sorted by median: "talk b" has half of "talk a"'s loudness.
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["talk b", "talk a"]
    by_id = {v["video_id"]: v for v in videos}
    for (low, marker, high), video_id in zip(errorbar_ranges(axes), ["talk b", "talk a"],
                                             strict=True):  # fmt: skip
        video = by_id[video_id]
        assert video["volume_mean"] - video["volume_std"] < 0  # mean +- std would go below 0
        assert low >= 0 and low <= marker <= high
        assert (low, marker, high) == pytest.approx(
            (video["volume_p10"], video["volume_median"], video["volume_p90"])
        )


def test_feature_panels_only_for_features_present_and_ids_on_many_videos():
    assert [a.get_title() for a in summary_figures([])["features"].axes] == ["Feature statistics"]
    many = [
        {"video_id": f"clip {i:03d}", "status": "processed", "wav2vec_norm_p10": 1.0 + i,
         "wav2vec_norm_median": 2.0 + i, "wav2vec_norm_p90": 3.0 + i}
        for i in range(100)
    ]  # fmt: skip
    [axes] = summary_figures(many)["features"].axes  # wav2vec only
    assert axes.get_title().startswith("wav2vec")
    labels = [tick.get_text() for tick in axes.get_xticklabels()]
    assert len(labels) == MAX_LABELLED_VIDEOS
    assert labels[0] == "clip 000" and labels[-1] == "clip 099"
    assert set(labels) <= {v["video_id"] for v in many}
