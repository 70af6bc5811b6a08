"""One clock for audio and video: late audio, timestamp gaps, short audio, stream choice,
damaged data and channel layouts, on inputs built here (``clock_media``).

Expected values are analytic (the beep is at 1.00 s, the flash at frame 25, a gap is
silence) or come from the system ffmpeg/ffprobe (a different build from the pipeline's).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from dpl_assets.media.frames import DecodeDamage, decode_frames
from dpl_assets.media.probe import probe_media
from dpl_assets.nodes.audio import extract_wav, volume_envelope
from dpl_assets.nodes.frames import extract_frames
from dpl_assets.outcomes import InputRejected
from dpl_assets.packing.resample import feature_times, resample_to_frames
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets_tests import clock_media
from dpl_assets_tests.media_factory import _system_binary

RATE = 16_000


def onset_s(wav: np.ndarray, threshold: float = 0.1) -> float:
    """Time (s) of the first sample louder than ``threshold``."""
    loud = np.flatnonzero(np.abs(wav) > threshold)
    assert loud.size, "no loud sample"
    return float(loud[0] / RATE)


def level_db(wav: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))))


def system_count_frames(path: Path) -> int:
    """Video frames the system ffprobe decodes (the reference for damaged files)."""
    out = subprocess.run(
        [_system_binary("ffprobe"), "-v", "quiet", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "json", str(path)],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return int(json.loads(out)["streams"][0]["nb_read_frames"])


def best_correlation(
    a: np.ndarray, b: np.ndarray, max_lag: int, span_s: tuple[float, float] = (0.2, 1.8)
) -> float:
    """The largest correlation of ``a`` and ``b`` over ``span_s`` (seconds of ``a``) and
    lags of up to ``max_lag`` samples either way."""
    span = slice(int(span_s[0] * RATE), int(span_s[1] * RATE))
    return max(
        float(np.corrcoef(a[span], b[span.start + lag : span.stop + lag])[0, 1])
        for lag in range(-max_lag, max_lag + 1)
    )


def system_decode_stream(path: Path, stream: int) -> np.ndarray:
    """Stream ``stream`` decoded by the system ffmpeg, channels averaged, 16 kHz."""
    pcm = subprocess.run(
        [_system_binary("ffmpeg"), "-v", "error", "-i", str(path), "-map", f"0:{stream}",
         "-ac", "1", "-ar", str(RATE), "-f", "f32le", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(pcm, "<f4")


# ---------------------------------------------------------------------------------------
# Audio that starts later than the video
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_late_audio_sits_on_the_container_clock(media_dir, tmp_path, ext):
    source = clock_media.make_late_audio(media_dir / f"late{ext}", offset_s=0.5)

    wav = extract_wav(source)
    extract_frames(source, tmp_path / "images.h5")

    # Leading silence, then the beep where it plays: 1.00 s, the flash's time.
    assert abs(onset_s(wav) - clock_media.BEEP_S) < 0.005
    assert np.max(np.abs(wav[: int(0.45 * RATE)])) < 1e-3
    with ImageStack(tmp_path / "images.h5", "images") as stack:
        brightness = np.array([frame.mean() for frame in stack])
        times = stack.timestamps
    assert np.flatnonzero(brightness > 128).tolist() == list(clock_media.FLASH_FRAMES)
    # The volume on the frames (as packed) rises at frame 25, not 12 frames early.
    volume = volume_envelope(wav)
    on_frames = resample_to_frames(volume, feature_times(volume.size, window_samples=320), times)
    assert int(np.argmax(on_frames > 0.25 * on_frames.max())) == clock_media.FLASH_FRAMES[0]
    assert on_frames[clock_media.FLASH_FRAMES[0] - 1] < 0.05 * on_frames.max()
    # probe records the chosen streams and their start times.
    probe = probe_media(source)
    audio = probe.chosen("audio")
    assert audio is not None and 0.45 < (audio.start_time_s or 0) < 0.52
    assert probe.video_stream == 0 and probe.audio_stream == 1


# ---------------------------------------------------------------------------------------
# Gaps in the audio timestamps
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "gap_s"), [(".mp4", 0.2), (".mp4", 0.5), (".mkv", 0.5)])
def test_gap_in_audio_timestamps_becomes_silence(media_dir, ext, gap_s):
    clean = clock_media.make_noise_clip(media_dir / f"clean{ext}")
    start = 1.0
    gapped = clock_media.drop_audio_packets(clean, media_dir / f"gap{ext}", start, start + gap_s)

    reference = extract_wav(clean)
    wav = extract_wav(gapped)

    assert abs(wav.size - reference.size) <= 0.03 * RATE  # nothing after the gap moved up
    inside = wav[int((start + 0.03) * RATE) : int((start + gap_s - 0.03) * RATE)]
    assert np.max(np.abs(inside)) < 1e-3  # the gap is silence
    # Later audio sits on its own timestamps: the clean clip's audio, at the same time to
    # within Matroska's 1 ms timestamp precision (a chirp: any larger shift decorrelates).
    after = (start + gap_s + 0.1, 3.5)
    assert best_correlation(wav, reference, max_lag=16, span_s=after) > 0.95
    assert best_correlation(wav, reference, max_lag=16, span_s=(0.1, start - 0.05)) > 0.95


# ---------------------------------------------------------------------------------------
# Audio shorter than the video; audio too short for a feature; truncated files
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "video_codec", "audio_codec"),
    [(".mkv", "libx264", "aac"), (".webm", "libvpx", "libopus"), (".mp4", "libx264", "aac")],
)
def test_audio_ending_before_the_video_is_processed(media_dir, ext, video_codec, audio_codec):
    source = clock_media.make_noise_clip(
        media_dir / f"short{ext}", seconds=4.0, audio_s=3.0,
        video_codec=video_codec, audio_codec=audio_codec,
    )  # fmt: skip

    wav = extract_wav(source)

    assert abs(wav.size / RATE - 3.0) < 0.05  # ends where the audio ends, never stretched


def test_truncated_matroska_is_still_rejected(media_dir):
    clean = clock_media.make_noise_clip(media_dir / "whole.mkv", seconds=4.0)
    cut = media_dir / "cut.mkv"
    data = clean.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(InputRejected, match=r"cut\.mkv: truncated"):
        extract_wav(cut)


@pytest.mark.parametrize("ext", [".mov", ".mkv"])
def test_audio_shorter_than_one_feature_frame_has_one_clear_reason(media_dir, ext):
    source = clock_media.make_short_audio(media_dir / f"blip{ext}", audio_ms=10)

    with pytest.raises(InputRejected) as caught:
        extract_wav(source)

    assert caught.value.reason == (
        f"{source}: audio of 10 ms is shorter than one 25 ms feature frame"
    )


# ---------------------------------------------------------------------------------------
# Stream choice
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("default", "expected_stream"), [(1, 2), (None, 1)])
def test_audio_stream_is_the_default_one_else_the_first(media_dir, default, expected_stream):
    source = clock_media.make_two_audio_streams(media_dir / f"two_{default}.mkv", default)

    probe = probe_media(source)
    wav = extract_wav(source)

    assert probe.audio_stream == expected_stream
    assert any(f"audio: stream {expected_stream}" in why for why in probe.stream_choice)
    chosen = system_decode_stream(source, expected_stream)
    other = system_decode_stream(source, 3 - expected_stream)
    # Which stream, not where: two ffmpeg builds trim AAC priming differently (~50 ms).
    assert best_correlation(wav, chosen, max_lag=1600) > 0.99
    assert best_correlation(wav, other, max_lag=1600) < 0.5


def test_moving_video_is_chosen_over_a_still_picture_track(media_dir, tmp_path):
    source = clock_media.make_picture_then_video(media_dir / "picture_first.mkv")

    probe = probe_media(source)
    info = extract_frames(source, tmp_path / "images.h5")

    assert probe.video_stream == 1 and "video: stream 1" in probe.stream_choice[0]
    assert info.frames == 50 and (info.width, info.height) == (160, 120)


def test_cover_art_is_never_the_video(media_dir, tmp_path):
    clip = clock_media.make_noise_clip(media_dir / "clip.mp4", seconds=2.0)
    cover = media_dir / "cover.png"
    clock_media._ffmpeg("-f", "lavfi", "-i", "color=blue:s=640x480", "-frames:v", "1",
                        clock_media._url(cover))  # fmt: skip
    source = media_dir / "with_cover.mp4"
    clock_media._ffmpeg(
        "-i", clock_media._url(clip), "-i", clock_media._url(cover),
        "-map", "0:v", "-map", "0:a", "-map", "1:v", "-c", "copy",
        "-disposition:v:1", "attached_pic", clock_media._url(source),
    )  # fmt: skip

    probe = probe_media(source)

    assert probe.streams[2].attached_pic and probe.video_stream == 0
    assert extract_frames(source, tmp_path / "images.h5").frames == 50


# ---------------------------------------------------------------------------------------
# Damaged data
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("zeros", [False, True])
def test_damaged_video_keeps_what_decodes_and_flags_the_span(media_dir, tmp_path, zeros):
    clean = clock_media.make_noise_clip(media_dir / "clean.mp4")
    damaged = clock_media.damage_mid_stream(clean, media_dir / "damaged.mp4", zeros=zeros)

    damage = DecodeDamage()
    frames = list(decode_frames(damaged, damage))
    info = extract_frames(damaged, tmp_path / "images.h5")

    # What decodes is what the system ffmpeg decodes (give or take a reordered frame).
    assert abs(len(frames) - system_count_frames(damaged)) <= 1
    assert info.frames == len(frames) < 100
    times = np.array([f.time_s for f in frames])
    assert np.all(np.diff(times) > 0)
    with h5py.File(tmp_path / "images.h5") as file:
        spans = np.asarray(file.attrs["damaged_spans"])
        assert "damaged video data" in file.attrs["damage"]
    # Every missing frame time lies in a flagged span, and nothing kept does.
    expected = np.round(np.arange(100) / clock_media.FPS, 6)
    missing = np.setdiff1d(expected, np.round(times, 6))
    assert missing.size and spans.shape[1] == 2
    for t in missing:
        assert np.any((spans[:, 0] - 1e-6 <= t) & (t < spans[:, 1] + 1e-6)), t
    for t in times:
        assert not np.any((spans[:, 0] + 1e-6 < t) & (t < spans[:, 1] - 1e-6)), t


def test_clean_video_has_no_damage(media_dir, tmp_path):
    clean = clock_media.make_noise_clip(media_dir / "clean.mp4")
    extract_frames(clean, tmp_path / "images.h5")
    with h5py.File(tmp_path / "images.h5") as file:
        assert file.attrs["damaged_spans"].shape == (0, 2) and file.attrs["damage"] == ""


# ---------------------------------------------------------------------------------------
# Loudness does not depend on the channel layout
# ---------------------------------------------------------------------------------------


def test_same_speech_same_level_in_mono_stereo_and_51_centre(media_dir):
    levels = {
        layout: level_db(extract_wav(clock_media.make_speech_in_layout(
            media_dir / f"speech_{layout}.mp4", layout)))
        for layout in ("mono", "stereo", "5.1")
    }  # fmt: skip

    assert max(levels.values()) - min(levels.values()) < 1.0, levels


# ---------------------------------------------------------------------------------------
# A batch through `dpl run`: damaged and too-short files are that video's outcome only
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 20])
def test_damaged_and_short_files_never_fail_their_batch(tmp_path, chunk_size):
    from dpl_assets_tests.test_pipeline import run_cli

    folder = tmp_path / "videos"
    clean = clock_media.make_noise_clip(folder / "clean.mp4")
    clock_media.damage_mid_stream(clean, folder / "random bytes.mp4")
    clock_media.damage_mid_stream(clean, folder / "zero block.mp4", zeros=True)
    clock_media.make_short_audio(folder / "blip.mkv", audio_ms=10)
    clock_media.make_late_audio(folder / "late.mkv")
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "VolumeNode", "params": {}},
        {"name": "VideoToImagesNode", "params": {"fps": 25}},
    ]

    code, report = run_cli(tmp_path, graph, {"video": str(folder)}, "--chunk_size",
                           str(chunk_size))  # fmt: skip

    assert code == 0, report
    for name in ("clean", "late", "random bytes", "zero block"):
        assert report[name]["status"] == "processed", report[name]
    for name in ("random bytes", "zero block"):
        assert report[name]["damaged_spans"]
        assert any("damaged video data" in w for w in report[name]["warnings"])
    # The audio of the random-bytes clip was hit too: its silence is reported.
    assert any("damaged audio data" in w for w in report["random bytes"]["warnings"])
    assert report["clean"]["damaged_spans"] == [] and report["clean"]["warnings"] == []
    blip = report["blip"]
    assert blip["status"] == "rejected"
    assert (
        blip["reason"]
        == f"{folder / 'blip.mkv'}: audio of 10 ms is shorter than one 25 ms feature frame"
    )
    # The late clip's probe records which streams were used and where they start.
    probe = json.loads((tmp_path / "out" / "probe" / "late.json").read_text())
    assert probe["audio_stream"] == 1 and 0.45 < probe["streams"][1]["start_time_s"] < 0.52


def test_a_users_file_that_does_not_decode_rejects_only_its_video(tmp_path):
    from dpl_assets_tests.test_pipeline import run_cli

    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    for name in ("good", "bad"):
        clock_media.make_noise_clip(videos / f"{name}.mp4", seconds=1.0)
    soundfile_path = wavs / "good.wav"
    soundfile_path.parent.mkdir(parents=True)
    clock_media._ffmpeg("-f", "lavfi", "-i", "sine=d=1", clock_media._url(soundfile_path))
    (wavs / "bad.wav").write_bytes(b"RIFF" + bytes(range(256)) * 8)  # a header, then junk

    code, report = run_cli(tmp_path, [{"name": "VolumeNode", "params": {}}],
                           {"video": str(videos), "wav": str(wavs)})  # fmt: skip

    assert code == 0 and report["good"]["status"] == "processed"
    assert report["bad"]["status"] == "rejected"
    assert str(wavs / "bad.wav") in report["bad"]["reason"]
    assert "does not decode" in report["bad"]["reason"]


def test_decode_errors_name_their_file(tmp_path):
    from dpl_assets.media.errors import decode_rejection

    junk = tmp_path / "junk.mkv"
    junk.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(av.FFmpegError) as caught:
        av.open(str(junk))

    reason = decode_rejection(caught.value, "/fallback.mkv")
    assert reason is not None and reason.startswith(f"{junk}: media does not decode")
    assert decode_rejection(ValueError("a bug")) is None


def test_damaged_audio_becomes_silence_and_is_flagged(media_dir):
    from dpl_assets.nodes.audio import extract_wav_with_damage

    clean = clock_media.make_noise_clip(media_dir / "clean.mp4")
    damaged = clock_media.damage_mid_stream(clean, media_dir / "damaged.mp4")

    reference, clean_damage = extract_wav_with_damage(clean)
    wav, damage = extract_wav_with_damage(damaged)

    assert clean_damage.spans == [] and clean_damage.summary == ""
    assert damage.spans and damage.summary.startswith("damaged audio data")
    assert abs(wav.size - reference.size) <= 0.03 * RATE  # later audio did not move up
    # Every place the audio differs from the clean clip's lies in a flagged span (give or
    # take one AAC frame of overlap on each side), and the spans are silence.
    differs = np.flatnonzero(np.abs(wav[: reference.size] - reference[: wav.size]) > 0.05) / RATE
    slack = 0.05
    for t in differs:
        assert any(a - slack <= t <= b + slack for a, b in damage.spans), t
    for a, b in damage.spans:
        inside = wav[int((a + 0.03) * RATE) : int((b - 0.03) * RATE)]
        assert inside.size == 0 or np.max(np.abs(inside)) < 1e-3


def test_frames_in_damaged_audio_spans_are_invalid_in_training_files(tmp_path):
    from dpl_assets_tests.test_pipeline import run_cli

    folder = tmp_path / "videos"
    clean = clock_media.make_noise_clip(folder / "clean.mp4")
    clock_media.damage_mid_stream(clean, folder / "damaged.mp4")
    clean.unlink()
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "VolumeNode", "params": {}},
        {"name": "VideoToImagesNode", "params": {"fps": 25}},
        {"name": "H5DatasetNode", "params": {"datatypes": ["images", "volume"]}},
    ]

    code, report = run_cli(tmp_path, graph, {"video": str(folder)})

    assert code == 0 and report["damaged"]["status"] == "processed"
    record = json.loads((tmp_path / "out/_status/wav/damaged.damaged.json").read_text())
    assert record["spans"]
    with h5py.File(tmp_path / "out/h5_dataset/damaged.h5") as file:
        times = file["timestamps"][:]
        mask = file["audio_mask"][:].astype(bool)
        volume = file["volume"][:]
    in_gap = np.zeros(times.size, bool)
    for start, end in record["spans"]:
        in_gap |= (times >= start) & (times < end)
    assert in_gap.any()
    assert np.array_equal(mask, ~in_gap & (times < 4.0))
    assert np.all(volume[in_gap] == 0)


def test_a_users_wav_too_short_for_a_feature_frame_has_the_same_reason(tmp_path):
    from dpl_assets_tests.test_pipeline import run_cli

    videos, wavs = tmp_path / "videos", tmp_path / "wavs"
    clock_media.make_noise_clip(videos / "blip.mp4", seconds=1.0)
    wavs.mkdir()
    clock_media._ffmpeg(
        "-f", "lavfi", "-i", "sine=d=0.01:r=16000", clock_media._url(wavs / "blip.wav")
    )

    code, report = run_cli(tmp_path, [{"name": "VolumeNode", "params": {}}],
                           {"video": str(videos), "wav": str(wavs)})  # fmt: skip

    assert code == 0 and report["blip"]["status"] == "rejected"
    # The user's file is named, as the video's own wav would be.
    assert report["blip"]["reasons"] == [
        f"{videos / 'blip.mp4'}: {wavs / 'blip.wav'}: audio of 10 ms is shorter than one "
        "25 ms feature frame"
    ]
