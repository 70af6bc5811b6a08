"""Speech activity: Silero VAD's speech probability on the 50 Hz audio steps.

Output contract (``speech``): float32 (T,) speech probability in [0, 1] per 20 ms step on
the wav's clock, step k covering ``[0.02 k, 0.02 (k + 1))`` s (samples ``[320 k, 320 k +
320)`` at 16 kHz), T the step count of ``volume`` and wav2vec for the same wav
(:func:`dpl_assets.nodes.audio.conv_output_length`).

Silero VAD (https://github.com/snakers4/silero-vad, the ``silero-vad`` wheel, which ships
its TorchScript weights: offline) gives one probability per 512-sample window (32 ms at
16 kHz), window j covering samples ``[512 j, 512 (j + 1))`` with 64 samples of context
before it and its recurrent state carried from window to window; the audio is zero-padded
to whole windows, as the library's own ``get_speech_timestamps`` does. The windows'
probabilities are put on the 20 ms steps by time: each step gets the mean of the windows
over its 20 ms, weighted by how much of the step each covers (:func:`windows_to_steps`).

The boolean (speech or not) is the probability at or above a threshold, with Silero's
duration rules: pauses shorter than ``min_silence_s`` are bridged, then runs shorter than
``min_speech_s`` are dropped (:func:`speech_active`, :func:`speech_spans`). Per video frame:
:func:`speech_at_frames`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.media.timeline import true_runs
from dpl_assets.nodes.audio import VOLUME_HOP_SAMPLES, conv_output_length

SILERO_WINDOW_SAMPLES = 512
"""Samples Silero VAD scores at a time at 16 kHz (32 ms)."""
STEP_SAMPLES = VOLUME_HOP_SAMPLES
"""Samples per ``speech`` step: 320 at 16 kHz, 20 ms (the volume/wav2vec step)."""
STEP_S = STEP_SAMPLES / AUDIO_SAMPLE_RATE_HZ
"""Seconds per ``speech`` step (0.02)."""


class SileroVad:
    """Silero VAD's TorchScript model on the CPU (``silero_vad.load_silero_vad()``).

    Stateful (its recurrent state runs across windows), so one per thread: :meth:`acquire`
    takes an idle one of this process (loading one, 0.1 s, only when none is idle) and
    :meth:`close` gives it back, so a process loads as many as it ever runs at once.

    torch runs it on one intra-op thread: its ops work on 512-sample windows, too small to
    split (two threads measured ~10x slower on two busy cores); parallel videos use
    threads of their own instead. Setting it is process-wide: each step of the pipeline
    sets its thread budget again as it starts (:func:`dpl_assets.threads.apply`).
    """

    _idle: ClassVar[list[SileroVad]] = []
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        from silero_vad import load_silero_vad

        self.module = load_silero_vad()
        """The TorchScript module: ``module(chunk, 16000)`` scores one 512-sample window."""

    @classmethod
    def acquire(cls) -> SileroVad:
        """An idle model of this process, or a new one; torch set to one intra-op thread
        (importing ``silero_vad`` does that too)."""
        import torch

        with cls._lock:
            model = cls._idle.pop() if cls._idle else None
        model = model or cls()
        torch.set_num_threads(1)
        return model

    def close(self) -> None:
        """Give the model back to the process's idle ones."""
        with self._lock:
            if self not in self._idle:
                self._idle.append(self)

    def window_probabilities(self, wav: np.ndarray) -> np.ndarray:
        """Speech probability float32 (W,) of each 512-sample window of ``wav`` (float32
        (N,) in [-1, 1] at 16 kHz), W = ceil(N / 512), the last window zero-padded: what
        silero-vad's ``get_speech_timestamps`` computes, window by window from a fresh
        state. The whole windows go through the model's own TorchScript loop on a view of
        ``wav`` (no copy of a long recording), the padded last one after them."""
        import torch

        window = SILERO_WINDOW_SAMPLES
        audio = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))[None]
        whole = audio.shape[1] // window * window
        parts = []
        self.module.reset_states()
        with torch.inference_mode():
            if whole:  # its loop starts from a fresh state too
                parts.append(self.module.audio_forward(audio[:, :whole], AUDIO_SAMPLE_RATE_HZ))
            if audio.shape[1] > whole:  # the state runs on from the last whole window
                tail = torch.nn.functional.pad(
                    audio[:, whole:], (0, whole + window - audio.shape[1])
                )
                parts.append(self.module(tail, AUDIO_SAMPLE_RATE_HZ))
        if not parts:
            return np.zeros(0, np.float32)
        return torch.cat(parts, dim=1)[0].numpy().astype(np.float32)


def windows_to_steps(
    window_probs: np.ndarray,
    num_steps: int,
    window_samples: int = SILERO_WINDOW_SAMPLES,
    step_samples: int = STEP_SAMPLES,
) -> np.ndarray:
    """Per-window values float (W,), window j covering samples ``[j w, (j + 1) w)``, onto
    ``num_steps`` steps of ``step_samples`` (step k: ``[k s, (k + 1) s)``): float32
    (num_steps,), each step the overlap-weighted mean of the windows it spans (the exact
    mean over the step of the piecewise-constant window signal). Samples past the last
    window count as 0 (no audio, no speech)."""
    values = np.asarray(window_probs, np.float64).reshape(-1)
    if values.size == 0:
        return np.zeros(num_steps, np.float32)
    # Integral of the piecewise-constant signal (0 past the last window) at each step edge.
    edges = np.concatenate([[0.0], np.cumsum(values) * window_samples])
    bounds = np.arange(num_steps + 1, dtype=np.int64) * step_samples
    window = np.minimum(bounds // window_samples, values.size)
    level = np.append(values, 0.0)[window]
    totals = edges[window] + level * (bounds - window * window_samples)
    return (np.diff(totals) / step_samples).astype(np.float32)


def speech_probability(model: SileroVad, wav: np.ndarray) -> np.ndarray:
    """The ``speech`` contract: float32 (T,) speech probability per 20 ms step of ``wav``
    (float32 (N,) at 16 kHz), T = :func:`conv_output_length` of N (the ``volume`` steps)."""
    return windows_to_steps(model.window_probabilities(wav), conv_output_length(wav.size))


def speech_active(
    speech: np.ndarray, threshold: float, min_speech_s: float = 0.0, min_silence_s: float = 0.0
) -> np.ndarray:
    """bool (T,): speech per 20 ms step: ``speech`` (T,) at or above ``threshold``, with the
    pauses inside speech shorter than ``min_silence_s`` filled, then the runs of speech
    shorter than ``min_speech_s`` dropped: the duration rules of Silero's
    ``get_speech_timestamps`` (``min_silence_duration_ms``, ``min_speech_duration_ms``),
    without its lower exit threshold and padding, so the spans keep to the probability."""
    active = np.asarray(speech) >= threshold
    starts, ends = true_runs(active)
    min_gap = math.ceil(min_silence_s / STEP_S - 1e-9)
    for end, start in zip(ends[:-1], starts[1:], strict=True):
        if start - end < min_gap:
            active[end:start] = True
    min_run = math.ceil(min_speech_s / STEP_S - 1e-9)
    for start, end in zip(*true_runs(active), strict=True):
        if end - start < min_run:
            active[start:end] = False
    return active


def speech_spans(active: np.ndarray) -> list[tuple[float, float]]:
    """(start_s, end_s) of each run of speech steps in ``active`` (T,) bool, on the wav
    clock (step edges: multiples of 20 ms)."""
    starts, ends = true_runs(np.asarray(active, bool))
    pairs = zip(starts.tolist(), ends.tolist(), strict=True)
    return [(round(s * STEP_S, 6), round(e * STEP_S, 6)) for s, e in pairs]


def speech_at_frames(
    speech: np.ndarray,
    frame_times_s: np.ndarray | Sequence[float],
    threshold: float,
    min_speech_s: float = 0.0,
    min_silence_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Speech at video frames: (probability float32 (N,), active bool (N,)) for frames at
    ``frame_times_s`` (N,) seconds on the container clock: the values of the 20 ms step the
    frame's timestamp falls in (step ``floor(t / 0.02)``; the boolean by
    :func:`speech_active` with the same parameters). Frames outside the steps (before 0,
    after the audio's last step) get probability 0 and no speech, as the timeline gives
    frames after the audio's end silence."""
    probability = np.asarray(speech, np.float32).reshape(-1)
    active = speech_active(probability, threshold, min_speech_s, min_silence_s)
    times = np.asarray(frame_times_s, np.float64).reshape(-1)
    # Nudged by 1 ns so a time exactly on a step edge (0.04 = 2 x 0.02) falls in that step.
    step = np.floor(times / STEP_S + 1e-9).astype(np.int64)
    inside = (step >= 0) & (step < probability.size)
    index = np.where(inside, step, 0)
    on_frames = np.where(inside, probability[index] if probability.size else 0.0, 0.0)
    active_frames = inside & (active[index] if probability.size else False)
    return on_frames.astype(np.float32), np.asarray(active_frames, bool)
