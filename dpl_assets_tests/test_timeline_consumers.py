"""Consumers of the one clock: the frame-time rule, and a clip whose face is gone for 1 s
and whose audio ends before its last frame, run the way a user runs it (``dpl run``).

References: the frames the test blanked out itself (frames 25-49), the wav's own length
read with soundfile, the AAC stream's duration from the system ffprobe, and windows
counted here by brute force.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile

from dpl_assets.media import timeline
from dpl_assets.media.ffmpeg import file_url, run_ffmpeg
from dpl_assets.packing.reader import PackedWindows
from dpl_assets.samples import face_frames
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.test_pipeline import run_cli
from dpl_assets_tests.tiny_wav2vec import build_tiny_wav2vec

FPS = 25
SECONDS = 3.0
FRAMES = 75
GONE = range(25, 50)  # the face is gone from 1.00 s to 2.00 s
AUDIO_S = 2.6  # the audio stream ends 0.4 s before the video


# --------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------


def test_frame_times_rule():
    stamps = np.array([0.5, 0.54, 0.62])  # a late, variable-rate stream
    np.testing.assert_array_equal(timeline.frame_times_for(stamps, 3), stamps)
    np.testing.assert_allclose(timeline.frame_times_for(stamps, 3, 10.0), [0.0, 0.1, 0.2])
    np.testing.assert_allclose(timeline.frame_times_for(None, 2, 4.0), [0.0, 0.25])
    np.testing.assert_allclose(
        timeline.frame_times_for(None, 3, assume_fps=25.0), [0.0, 0.04, 0.08]
    )
    np.testing.assert_array_equal(  # the timestamps win over an assumed rate
        timeline.frame_times_for(stamps, 3, assume_fps=25.0), stamps
    )
    with pytest.raises(ValueError, match="give the fps parameter"):
        timeline.frame_times_for(stamps, 4)
    with pytest.raises(ValueError, match="no frame times"):
        timeline.frame_times_for(None, 4)


def test_feature_coverage_and_silence_helpers():
    assert timeline.feature_end_samples(0, 320, 400) == 0
    assert timeline.feature_end_samples(3, 320, 400) == 2 * 320 + 400
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = timeline.silence_after_audio(values, np.array([True, True, False]))
    np.testing.assert_array_equal(out, [[0, 1], [2, 3], [0, 0]])
    assert values[2, 0] == 4  # a copy
    np.testing.assert_array_equal(
        timeline.frames_with_audio(np.array([0.0, 0.99, 1.0]), 16_000), [True, True, False]
    )


# --------------------------------------------------------------------------------------
# A face gone for 1 s, audio ending early: training files and the reader
# --------------------------------------------------------------------------------------


def make_face_gone_clip(path: Path) -> Path:
    """3 s of a real face at 25 fps with frames 25-49 mid grey (no face), and a 220 Hz tone
    that stops at 2.6 s (an AAC stream shorter than the video), in an mp4."""
    frames = face_frames(SECONDS, FPS)
    frames[list(GONE)] = 128
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.parent.parent / "frames.rgb"  # outside the input folder
    raw.write_bytes(frames.tobytes())
    run_ffmpeg(
        [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{frames.shape[2]}x{frames.shape[1]}",
            "-r", str(FPS), "-i", file_url(raw),
            "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=44100:duration={AUDIO_S}",
            "-map", "0:v", "-map", "1:a",
            "-c:v", "mpeg4", "-q:v", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
            "-y", file_url(path),
        ],
        what=str(path),
    )  # fmt: skip
    raw.unlink()
    return path


@pytest.fixture(scope="module")
def face_gone(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("face gone")
    clip = make_face_gone_clip(root / "videos" / "gone.mp4")
    model = build_tiny_wav2vec(root / "w2v")
    graph = [
        {"name": "VideoToImagesNode", "params": {}},
        {"name": "VideoToWavNode", "params": {}},
        {"name": "Wav2vecNode", "params": {"checkpoint": str(model), "device": "cpu"}},
        {"name": "FaceAlignmentNode", "params": {}},
        {"name": "FixedBboxesNode", "params": {}},
        {"name": "CropNode", "params": {"size_hw": [64, 64]}},
        {"name": "HeadPoseNode", "params": {}},
        {"name": "BlinksNode", "params": {}},
        {"name": "H5DatasetNode", "params": {}},  # the default datatypes: no face_mask named
        {"name": "Vid2vidAudioNode", "params": {"window_size": 4}},
    ]
    code, report = run_cli(root, graph, {"video": "videos"})
    out = root / "out"
    return {"code": code, "report": report, "out": out, "clip": clip}


def test_the_clip_is_processed(face_gone):
    assert face_gone["code"] == 0
    assert face_gone["report"]["gone"]["status"] == "processed", face_gone["report"]


def test_default_training_file_has_face_mask_zero_exactly_where_the_face_is_gone(face_gone):
    with h5py.File(face_gone["out"] / "h5_dataset" / "gone.h5", "r") as f:
        assert "face_mask" in f and f["face_mask"].attrs["kind"] == "mask"
        mask = f["face_mask"][:]
        assert f.attrs["frame_count"] == FRAMES and mask.shape == (FRAMES,)
        landmarks = f["landmarks"][:]
    expected = np.ones(FRAMES, bool)
    expected[list(GONE)] = False
    np.testing.assert_array_equal(mask != 0, expected)
    assert np.isnan(landmarks[list(GONE)]).all()  # what an unflagged window would serve


def test_audio_features_after_the_audio_end_are_silence_with_a_false_audio_mask(face_gone):
    out = face_gone["out"]
    samples = soundfile.info(out / "wav" / "gone.wav").frames
    stated = media.ffprobe_audio_duration_s(face_gone["clip"])  # the system ffprobe
    assert samples / 16_000 == pytest.approx(stated, abs=0.03)
    with h5py.File(out / "vid2vid_audio" / "gone.h5", "r") as f:
        times = f["timestamps"][:]
        audio_mask = f["audio_mask"][:]
        volume, wav2vec, feature = f["volume"][:], f["wav2vec"][:], f["audio_blink_feature"][:]
    expected = times < samples / 16_000
    np.testing.assert_array_equal(audio_mask, expected)
    assert expected[: round(2.55 * FPS)].all() and not expected[round(2.65 * FPS) :].any()
    assert (volume[~expected] == 0).all() and (wav2vec[~expected] == 0).all()
    assert (feature[~expected, : wav2vec.shape[1] + 1] == 0).all()
    assert volume[expected][:40].min() > 0  # the tone is heard where there is audio


def brute_force_starts(valid: np.ndarray, window: int, stride: int) -> list[int]:
    return [s for s in range(0, valid.size - window + 1, stride) if valid[s : s + window].all()]


def test_reader_skips_windows_without_a_face_by_default_and_serves_them_on_request(face_gone):
    path = face_gone["out"] / "h5_dataset" / "gone.h5"
    with h5py.File(path, "r") as f:
        face_valid = f["face_mask"][:] != 0
    default = PackedWindows(path, window=16, stride=4, keys=["crops", "landmarks"])
    starts = [default[i]["start"] for i in range(len(default))]
    assert starts == brute_force_starts(face_valid, 16, 4) and starts
    assert not any(s < GONE.stop and s + 16 > GONE.start for s in starts)
    for index in range(len(default)):
        assert not np.isnan(default[index]["landmarks"].numpy()).any()

    every = PackedWindows(path, window=16, stride=4, keys=["crops", "landmarks"],
                          skip_invalid=False)  # fmt: skip
    assert len(every) == len(range(0, FRAMES - 16 + 1, 4)) > len(default)
    item = every.window_at("gone", 24)
    assert item["face_mask"].tolist() == [1] + [0] * 15
    assert np.isnan(item["landmarks"].numpy()[1:]).all()


def test_reader_with_audio_keys_also_skips_frames_after_the_audio_end(face_gone):
    path = face_gone["out"] / "vid2vid_audio" / "gone.h5"
    with h5py.File(path, "r") as f:
        valid = f["audio_mask"][:].astype(bool)
        if "face_mask" in f:
            valid &= f["face_mask"][:] != 0
    dataset = PackedWindows(path, window=8, stride=2, keys=["crops", "wav2vec"])
    starts = [dataset[i]["start"] for i in range(len(dataset))]
    assert starts == brute_force_starts(valid, 8, 2)
    assert max(starts) + 8 <= round(2.65 * FPS)
    assert all(dataset[i]["audio_mask"].all() for i in range(len(dataset)))
