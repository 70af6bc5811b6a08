"""SpeechNode: Silero VAD on real speech (LibriVox readings, Debian ``pocketsphinx-testdata``)
with silences put between the sentences, on digital silence and on a pure tone."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from dpl_assets.assets.speech import SpeechConfig, speech_of
from dpl_assets.nodes.audio import conv_output_length, volume_envelope
from dpl_assets.nodes.speech import (
    SileroVad,
    speech_active,
    speech_at_frames,
    speech_probability,
    speech_spans,
    windows_to_steps,
)
from dpl_assets.outcomes import InputRejected

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
RATE = 16_000


def reading(number: str) -> np.ndarray:
    """One LibriVox sentence (16 kHz mono) cut to where its level (20 ms frames, averaged
    over 100 ms so a click does not count) is within 20 dB of its loudest: the
    recording's own pauses before and after it are removed."""
    path = LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{number}.wav"
    if not path.is_file():
        pytest.skip(f"{path} is missing: install Debian's pocketsphinx-testdata")
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE and samples.ndim == 1
    frames = samples[: samples.size // 320 * 320].reshape(-1, 320)
    power = np.convolve(np.mean(frames.astype(np.float64) ** 2, axis=1), np.ones(5) / 5, "same")
    level_db = 10 * np.log10(power + 1e-12)
    loud = np.flatnonzero(level_db > level_db.max() - 20)
    return samples[loud[0] * 320 : (loud[-1] + 1) * 320]


def sentences_with_pauses() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Sentence, 1.0 s of digital silence, sentence, 0.7 s, sentence: the wav and the two
    silences' (start_s, end_s)."""
    parts = [reading("0880"), np.zeros(RATE, np.float32), reading("0930"),
             np.zeros(round(0.7 * RATE), np.float32), reading("0890")]  # fmt: skip
    starts = np.cumsum([0, *[part.size for part in parts]]) / RATE
    return np.concatenate(parts), [(starts[1], starts[2]), (starts[3], starts[4])]


@pytest.fixture(scope="module")
def vad():
    return SileroVad.acquire()


@pytest.mark.parametrize("noise_rms", [0.0, 0.003], ids=["clean", "noise"])
def test_silences_between_sentences_are_found_within_0_1_s(vad, noise_rms):
    wav, silences = sentences_with_pauses()
    if noise_rms:  # a low hiss (-50 dBFS) over everything, silences included
        wav = wav + np.random.default_rng(0).normal(0, noise_rms, wav.size).astype(np.float32)

    speech = speech_probability(vad, wav)

    assert speech.dtype == np.float32 and speech.shape == volume_envelope(wav).shape
    assert speech.shape == (conv_output_length(wav.size),)
    active = speech_active(speech, 0.5, min_speech_s=0.25, min_silence_s=0.1)
    pauses = [(a, b) for a, b in speech_spans(~active) if b - a >= 0.3]  # not word gaps
    assert len(pauses) == 2, (pauses, silences)
    for (found_start, found_end), (start, end) in zip(pauses, silences, strict=True):
        assert abs(found_start - start) <= 0.1 and abs(found_end - end) <= 0.1, (pauses, silences)
    # The sentences themselves are speech nearly throughout.
    assert active.mean() > 0.7


def test_window_probabilities_are_the_models_own_window_by_window(vad):
    # The reference is get_speech_timestamps' loop: a fresh state, then the model called on
    # each 512-sample chunk, the last one zero-padded. 41 windows, the last one partial.
    import torch

    wav = reading("0930")[:20_900]
    model = vad.module
    model.reset_states()
    expected = []
    for start in range(0, wav.size, 512):
        chunk = torch.from_numpy(wav[start : start + 512])
        chunk = torch.nn.functional.pad(chunk, (0, 512 - chunk.numel()))
        expected.append(model(chunk, RATE).item())

    found = vad.window_probabilities(wav)

    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert vad.window_probabilities(wav[:450]).shape == (1,)  # shorter than one window


def test_windows_go_onto_20_ms_steps_by_overlap():
    # Window j covers samples [512 j, 512 j + 512); step k covers [320 k, 320 k + 320).
    windows = np.array([1.0, 0.0, 0.5], np.float32)
    steps = windows_to_steps(windows, 5)
    # step 1: 192 samples of window 0 (1.0) + 128 of window 1 (0.0); step 3: 64 of window 1
    # and 256 of window 2 (0.5); step 4: 256 of window 2, then past the audio (0).
    expected = [1.0, 192 / 320, 0.0, 256 * 0.5 / 320, 256 * 0.5 / 320]
    np.testing.assert_allclose(steps, expected, atol=1e-6)
    assert windows_to_steps(np.zeros(0, np.float32), 3).tolist() == [0, 0, 0]


def test_speech_at_frames_takes_the_step_each_frame_falls_in():
    speech = np.array([0.1, 0.9, 0.8, 0.2, 0.95], np.float32)  # steps of 20 ms
    times = np.array([0.0, 0.019, 0.02, 0.04, 0.079, 0.081, 0.1, -0.01])
    probability, active = speech_at_frames(speech, times, threshold=0.5)
    np.testing.assert_allclose(probability, [0.1, 0.1, 0.9, 0.8, 0.2, 0.95, 0.0, 0.0])
    assert active.tolist() == [False, False, True, True, False, True, False, False]
    # With the duration rules: the 20 ms pause is bridged, the 20 ms burst at the end is not
    # speech (shorter than 40 ms).
    _, ruled = speech_at_frames(speech, times, 0.5, min_speech_s=0.04, min_silence_s=0.04)
    assert ruled.tolist() == [False, False, True, True, True, True, False, False]


class StubIO(dict):
    """What ``speech_of`` reads of a video: its wav and the model."""

    video_id = "clip"

    def __init__(self, wav: np.ndarray, model: SileroVad):
        super().__init__(wav=wav)
        self.model = model

    def file_of(self, key: str) -> None:
        return None


def digital_silence() -> np.ndarray:
    return np.zeros(2 * RATE, np.float32)


def tone_440_hz() -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * RATE) / RATE)).astype(np.float32)


@pytest.mark.parametrize("make", [digital_silence, tone_440_hz])
def test_silence_and_a_pure_tone_are_no_speech(vad, make):
    wav = make()
    with pytest.raises(InputRejected, match="no speech"):
        speech_of(StubIO(wav, vad), SpeechConfig())

    kept = speech_of(StubIO(wav, vad), SpeechConfig(reject_no_speech=False))

    assert kept["speech"].shape == (conv_output_length(wav.size),)
    assert kept["speech"].max() < 0.2
    record = kept["speech_spans"]
    assert record["spans"] == [] and record["speech_s"] == 0 and record["threshold"] == 0.5
