"""Audio extraction (``dpl_assets.nodes.audio``, ``dpl_assets.media``) against references.

References are independent of the code under test: the system ffprobe/ffmpeg (a different
build from the one the pipeline runs), soundfile, and numpy computations written out here.
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from dpl_assets.media.audio import decode_audio_mono_16k
from dpl_assets.media.probe import probe_media
from dpl_assets.nodes.audio import conv_output_length, extract_wav, volume_envelope
from dpl_assets.outcomes import InputRejected
from dpl_assets_tests import media_factory as media
from dpl_assets_tests.media_factory import SampleMedia

RATE = 16_000
GOOD = ["sine_clip", "speech_clip", "low_rate_clip", "right_channel_voice", "audio_only", "aac"]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ---------------------------------------------------------------------------------------
# Good inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOOD)
def test_extract_wav_matches_system_ffmpeg_count_and_ffprobe_duration(sample_media, name):
    source = getattr(sample_media, name)

    wav = extract_wav(source)

    assert wav.dtype == np.float32 and wav.ndim == 1
    expected = media.ffprobe_decoded_audio_samples(source)
    assert abs(wav.size - expected) <= 1, (wav.size, expected)
    assert abs(wav.size / RATE - media.ffprobe_audio_duration_s(source)) <= 0.05
    # Same signal as the system decoder's (not just the same length) ...
    reference = media.reference_audio(source)
    shared = min(wav.size, reference.size)
    assert np.max(np.abs(wav[:shared] - reference[:shared])) < 0.01
    assert rms(wav) > 0.01 and np.max(np.abs(wav)) <= 1.0
    # ... and whatever the system decoder has beyond it is codec padding, not lost audio.
    assert reference.size - wav.size <= 0.025 * RATE
    assert np.max(np.abs(reference[shared:]), initial=0.0) < 0.01


def test_pcm_source_count_equals_system_decode_exactly(sample_media):
    """PCM has no codec padding: the raw system decode is an exact reference."""
    source = sample_media.right_channel_voice
    assert media.ffprobe_json(source)["streams"][1]["codec_name"] == "pcm_s16le"

    assert extract_wav(source).size == media.reference_audio(source).size == 2 * RATE


def test_voice_in_the_right_channel_only_survives_the_downmix(sample_media):
    source = sample_media.right_channel_voice
    # The fixture is what it claims: a video, stereo, exact digital silence on the left.
    streams = media.ffprobe_json(source)["streams"]
    assert [s["codec_type"] for s in streams] == ["video", "audio"]
    assert streams[1]["channels"] == 2
    left = media.reference_channel(source, 0)
    right = media.reference_channel(source, 1)
    assert left.size == right.size > 0
    assert np.max(np.abs(left)) == 0.0
    assert rms(right) > 0.02

    wav = extract_wav(source)

    assert rms(wav) > 0.2 * rms(right), (rms(wav), rms(right))


def test_audio_only_file_extracts_and_probes_without_video(sample_media):
    source = sample_media.audio_only
    assert [s["codec_type"] for s in media.ffprobe_json(source)["streams"]] == ["audio"]

    probe = probe_media(source)
    wav = extract_wav(source)

    assert probe.first("video") is None
    assert probe.first("audio") is not None and probe.first("audio").codec == "aac"
    assert abs(wav.size - media.ffprobe_decoded_audio_samples(source)) <= 1


# ---------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------


def _fixture_is_zero_byte(source: Path) -> None:
    assert source.stat().st_size == 0


def _fixture_has_lost_its_header(source: Path) -> None:
    assert source.stat().st_size > 0
    with pytest.raises(RuntimeError):
        media.ffprobe_json(source)  # the system ffprobe cannot open it either


def _fixture_has_no_audio(source: Path) -> None:
    kinds = [s["codec_type"] for s in media.ffprobe_json(source)["streams"]]
    assert kinds == ["video"]


def _fixture_promises_more_than_decodes(source: Path) -> None:
    assert media.ffprobe_audio_duration_s(source) >= 3.9
    assert media.reference_audio(source).size / RATE < 2.5


BAD = {
    "zero_byte": ("zero-byte", _fixture_is_zero_byte),
    "header_lost": ("cannot open", _fixture_has_lost_its_header),
    "video_only": ("no audio stream", _fixture_has_no_audio),
    "truncated": ("truncated", _fixture_promises_more_than_decodes),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_rejected_naming_file_and_cause(sample_media: SampleMedia, name):
    source = getattr(sample_media, name)
    cause, check_fixture = BAD[name]
    check_fixture(source)

    with pytest.raises(InputRejected) as caught:
        extract_wav(source)

    assert str(source) in caught.value.reason
    assert cause in caught.value.reason, caught.value.reason


# ---------------------------------------------------------------------------------------
# Odd file names
# ---------------------------------------------------------------------------------------

INJECTION_NAME = "it's a $(touch pwned) clip; rm -rf x — ünï.mp4"
ODD_NAMES = [INJECTION_NAME, "-leading dash.mp4", 'quote " and `touch pwned` .mp4']


@pytest.mark.parametrize("name", ODD_NAMES)
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_odd_file_names_extract_and_run_nothing(media_dir, monkeypatch, name, relative):
    source = media.make_talking_clip(media_dir / name, seconds=1.0)
    sentinel = media_dir / "x"  # what "rm -rf x" would delete if a shell ran
    sentinel.mkdir()
    outer_cwd = Path.cwd()
    monkeypatch.chdir(media_dir)  # where "touch pwned" would land if a shell ran

    wav = extract_wav(Path(name) if relative else source)

    assert abs(wav.size - media.ffprobe_decoded_audio_samples(source)) <= 1
    assert sentinel.is_dir()
    for folder in (media_dir.parent, outer_cwd, Path.home()):
        assert not list(folder.glob("**/pwned" if folder == media_dir.parent else "pwned"))


@pytest.mark.parametrize("name", ["concat:clip.mp4", "http:clip.mp4"])
def test_relative_name_with_a_protocol_prefix_is_read_as_the_local_file(
    media_dir, monkeypatch, name
):
    """ffmpeg.py promises names containing ':' are plain local files, relative ones too."""
    source = media.make_talking_clip(media_dir / name, seconds=1.0)
    media.make_talking_clip(media_dir / "clip.mp4", seconds=3.0)  # what "concat:" would read
    monkeypatch.chdir(media_dir)

    probe = probe_media(Path(name))
    wav = extract_wav(Path(name))

    assert probe.size_bytes == source.stat().st_size
    assert abs(probe.duration_s - media.ffprobe_audio_duration_s(source)) < 0.05
    assert abs(wav.size - media.ffprobe_decoded_audio_samples(source)) <= 1


# ---------------------------------------------------------------------------------------
# Volume envelope and frame counts
# ---------------------------------------------------------------------------------------


def frames_by_formula(num_samples: int) -> int:
    """wav2vec2-base frames: a 400-sample receptive field moved 320 samples at a time."""
    return max(0, (num_samples - 400) // 320 + 1)


@pytest.mark.parametrize("num_samples", [0, 79, 399, 400, 401, 719, 720, 721, 16_000, 32_322])
def test_conv_output_length_equals_receptive_field_formula(num_samples):
    assert conv_output_length(num_samples) == frames_by_formula(num_samples)


def test_volume_length_matches_frame_formula_on_extracted_audio(sample_media):
    wav = extract_wav(sample_media.speech_clip)
    expected = (wav.size - 400) // 320 + 1  # written out: 2.5 s -> 124 frames

    assert expected == 124
    assert volume_envelope(wav).shape == (conv_output_length(wav.size),) == (expected,)


def test_volume_values_equal_mean_abs_per_hop():
    # 1000 samples -> (1000 - 400) // 320 + 1 = 2 frames; the last 360 samples fall outside.
    wav = np.concatenate(
        [np.full(320, -1.0), np.tile([0.5, -0.5], 160), np.full(360, 0.25)]
    ).astype(np.float32)
    ramp = np.linspace(-1, 1, 1000, dtype=np.float32)

    assert volume_envelope(wav).tolist() == [1.0, 0.5]
    direct = [np.mean(np.abs(ramp[t * 320 : (t + 1) * 320])) for t in range(2)]
    np.testing.assert_allclose(volume_envelope(ramp), direct, rtol=1e-6)
    assert volume_envelope(ramp).dtype == np.float32


def test_volume_counts_hops_past_the_end_as_silence():
    wav = np.full(1000, 0.5, dtype=np.float32)
    # Frames: [0,320) [320,640) [640,960) full; [960,1280) has 40 samples; [1280,1600) none.
    expected = [0.5, 0.5, 0.5, 0.5 * 40 / 320, 0.0]

    np.testing.assert_allclose(volume_envelope(wav, num_frames=5), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Decoding a user's WAV
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [44_100 + 17, 30_001, 88_200])
def test_user_wav_44k1_stereo_decodes_to_expected_16k_count(tmp_path, num_samples):
    source_rate, tone_hz = 44_100, 440.0
    t = np.arange(num_samples) / source_rate
    tone = 0.4 * np.sin(2 * np.pi * tone_hz * t)
    stereo = np.stack([tone, 0.5 * tone], axis=1).astype(np.float32)
    path = tmp_path / "user take.wav"
    soundfile.write(path, stereo, source_rate, subtype="PCM_16")

    audio = decode_audio_mono_16k(path)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - round(num_samples * RATE / source_rate)) <= 2
    # Resampled, not reinterpreted: the tone is still at 440 Hz at 16 kHz.
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    peak_hz = np.argmax(spectrum) * RATE / audio.size
    assert abs(peak_hz - tone_hz) < 2.0
    # Both channels are mixed in: louder than the quieter channel alone.
    assert rms(audio) > rms(0.5 * tone)
