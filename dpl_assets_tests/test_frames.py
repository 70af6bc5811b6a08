"""Frames: counts and timestamps against ffprobe's decoded frames; rotation; resampling."""

import json
import math
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from dpl_assets.nodes.frames import extract_frames
from dpl_assets.outcomes import InputRejected
from dpl_assets.storage.image_stack import ImageStack, decode_image
from dpl_assets_tests import media_factory as media


def ffprobe_frame_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every decoded video frame, from the container's start.

    A negative container start is AAC priming, which Debian's ffprobe 5.1 counts and newer
    libav (ours, and the wav extraction) drops: only a positive start shifts the origin.
    """
    out = media._run(
        [media._system_binary("ffprobe"), "-v", "error", "-select_streams", "v:0",
         "-show_entries", "frame=best_effort_timestamp_time:format=start_time",
         "-of", "json", str(path)]
    )  # fmt: skip
    data = json.loads(out)
    start = max(0.0, float(data["format"].get("start_time", 0) or 0))
    times = [float(f["best_effort_timestamp_time"]) for f in data["frames"]]
    return np.sort(np.array(times)) - start


def make_cfr(path: Path) -> Path:
    media._ffmpeg(*media._testsrc(2.0, fps=25), *media._video_codec_args(), media._url(path))
    return path


def make_vfr(path: Path) -> Path:
    """30 fps for the first second, then every other frame (15 fps): variable rate."""
    media._ffmpeg(
        *media._testsrc(2.0, fps=30),
        "-vf", "select='if(lt(t,1),1,not(mod(n,2)))'", "-fps_mode", "vfr",
        *media._video_codec_args(), media._url(path),
    )  # fmt: skip
    return path


def make_late_video(path: Path) -> Path:
    """Audio from 0 s, video starting at 0.6 s (Matroska keeps the offset as is)."""
    media._ffmpeg(
        *media._sine(2.0, 44_100), "-itsoffset", "0.6", *media._testsrc(1.0, fps=25),
        "-map", "0:a", "-map", "1:v", "-c:a", "aac", *media._video_codec_args(),
        media._url(path),
    )  # fmt: skip
    return path


@pytest.mark.parametrize("make", [make_cfr, make_vfr, make_late_video], ids=["cfr", "vfr", "late"])
def test_frame_count_and_timestamps_match_ffprobe(tmp_path, make):
    source = make(tmp_path / f"{make.__name__}.mkv")
    expected = ffprobe_frame_times(source)

    info = extract_frames(source, tmp_path / "stack.h5")

    with ImageStack(tmp_path / "stack.h5", "images") as stack:
        assert len(stack) == info.frames == expected.size
        np.testing.assert_allclose(stack.timestamps, expected, atol=1e-3)
        assert stack[0].shape == (120, 160, 3)
    if make is make_late_video:
        assert stack.timestamps[0] == pytest.approx(0.6, abs=0.02)
    if make is make_vfr:
        gaps = np.diff(stack.timestamps)
        assert gaps.min() == pytest.approx(1 / 30, abs=2e-3)
        assert gaps.max() == pytest.approx(2 / 30, abs=2e-3)


def test_rotated_clip_comes_out_upright_like_ffmpeg_autorotate(tmp_path):
    source = media.make_rotated(tmp_path / "portrait.mp4")
    raw = media._run(
        [media._system_binary("ffmpeg"), "-v", "error", "-i", str(source), "-frames:v", "1",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    )  # fmt: skip
    extract_frames(source, tmp_path / "stack.h5", ext=".png")
    with ImageStack(tmp_path / "stack.h5", "images") as stack:
        first = stack[0]
        assert (stack.attrs["width"], stack.attrs["height"]) == (96, 160)  # swapped
    assert first.shape == (160, 96, 3)
    reference = np.frombuffer(raw, np.uint8).reshape(first.shape)
    # PNG is lossless: only the YUV->RGB conversions of the two decoders may differ.
    assert np.abs(first.astype(int) - reference.astype(int)).mean() < 2.0


def test_resampling_to_25_fps_gives_the_count_the_timestamps_imply(tmp_path):
    source = make_vfr(tmp_path / "vfr.mkv")
    times = ffprobe_frame_times(source)
    end = times[-1] + (times[-1] - times[-2])
    expected = math.ceil((end - times[0]) * 25 - 1e-9)

    info = extract_frames(source, tmp_path / "stack.h5", fps=25)

    with ImageStack(tmp_path / "stack.h5", "images") as stack:
        assert len(stack) == info.frames == expected
        np.testing.assert_allclose(np.diff(stack.timestamps), 1 / 25, atol=1e-9)
        assert stack.attrs["fps"] == 25


def test_stack_layout_is_readable_with_plain_h5py(tmp_path):
    source = make_cfr(tmp_path / "cfr.mp4")
    extract_frames(source, tmp_path / "stack.h5", quality=80)
    with h5py.File(tmp_path / "stack.h5", "r") as f:
        assert set(f) == {"images", "timestamps"}
        assert f.attrs["format"] == "jpeg" and f.attrs["quality"] == 80
        first = f["images"][0].tobytes()
        assert first[:3] == b"\xff\xd8\xff"  # a standalone JPEG file
        assert decode_image(first).shape == (f.attrs["height"], f.attrs["width"], 3)


def test_downscale_keeps_aspect_and_never_upscales(tmp_path):
    source = make_cfr(tmp_path / "cfr.mp4")
    assert extract_frames(source, tmp_path / "a.h5", max_side=80).width == 80
    assert extract_frames(source, tmp_path / "b.h5", max_side=80).height == 60
    assert extract_frames(source, tmp_path / "c.h5", max_side=1000).width == 160


def test_bad_videos_are_rejected_and_leave_no_stack(tmp_path):
    empty = media.make_zero_byte(tmp_path / "empty.mp4")
    audio_only = media.make_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(InputRejected, match="zero-byte"):
        extract_frames(empty, tmp_path / "x.h5")
    with pytest.raises(InputRejected, match="no video stream"):
        extract_frames(audio_only, tmp_path / "y.h5")
    assert not list(tmp_path.glob("*.h5"))


def test_memory_stays_bounded_for_a_long_clip(tmp_path):
    """A 40 s 640x480 clip: decoding holds one frame at a time, not the video."""
    source = tmp_path / "long.mp4"
    media._ffmpeg(*media._testsrc(40.0, size=(640, 480), fps=25), *media._video_codec_args(),
                  media._url(source))  # fmt: skip
    frame_bytes = 640 * 480 * 3
    tracemalloc.start()
    info = extract_frames(source, tmp_path / "long.h5")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.frames == 1000
    assert peak < 40 * frame_bytes  # the whole clip would be 1000 frames
