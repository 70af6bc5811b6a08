"""``SpeechNode``: speech activity of each video's wav (Silero VAD); its asset is generated
from this declaration.

Stored: ``speech`` (T,) float32, the probability per 20 ms audio step (the contract other
nodes read, see :mod:`dpl_assets.nodes.speech`), and ``speech_spans``, a JSON record of the
spans of speech with the ``threshold`` and minimum durations that made them. The boolean
per step is :func:`~dpl_assets.nodes.speech.speech_active` of ``speech`` with the record's
parameters (the spans are its runs), and per frame
:func:`~dpl_assets.nodes.speech.speech_at_frames`: nothing is stored twice.
"""

import importlib.metadata
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ
from dpl_assets.nodes.audio import check_feature_window
from dpl_assets.nodes.speech import (
    STEP_S,
    SileroVad,
    speech_active,
    speech_probability,
    speech_spans,
)
from dpl_assets.outcomes import InputRejected
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class SpeechConfig(NodeConfig):
    """``SpeechNode``."""

    threshold: float = Field(
        default=0.5, ge=0, le=1, description="Speech where the probability is at least this."
    )
    min_speech_seconds: float = Field(
        default=0.25, ge=0, description="Shorter runs of speech do not count (Silero's 250 ms)."
    )
    min_silence_seconds: float = Field(
        default=0.1, ge=0, description="Shorter pauses inside speech are bridged (Silero's 100 ms)."
    )
    reject_no_speech: bool = Field(
        default=True, description="Reject a video without any speech ('no speech')."
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos analysed in parallel threads.")


def silero_model(config: SpeechConfig, device: Callable[[], str]) -> SileroVad:
    """Silero VAD on the CPU, one per thread, kept by the process between steps."""
    return SileroVad.acquire()


def speech_of(io: VideoIO, config: SpeechConfig) -> dict[str, Any]:
    """Speech probability per 20 ms step of the video's wav and its spans of speech.

    Rejects a wav shorter than one 25 ms window, and, with ``reject_no_speech``, a wav
    with no speech: no run of at least ``min_speech_seconds`` at or above ``threshold``.
    """
    wav = io["wav"]
    check_feature_window(wav.size, io.file_of("wav") or io.video_id)
    speech = speech_probability(io.model, wav)
    active = speech_active(
        speech, config.threshold, config.min_speech_seconds, config.min_silence_seconds
    )
    if config.reject_no_speech and not active.any():
        raise InputRejected(
            f"no speech: no {config.min_speech_seconds:g} s of speech probability >= "
            f"{config.threshold:g} (highest {float(speech.max(initial=0.0)):.2f})"
        )
    spans = speech_spans(active)
    record = {
        "threshold": config.threshold,
        "min_speech_s": config.min_speech_seconds,
        "min_silence_s": config.min_silence_seconds,
        "step_s": STEP_S,
        "steps": int(speech.size),
        "audio_s": round(wav.size / AUDIO_SAMPLE_RATE_HZ, 6),
        "speech_s": round(float(active.sum()) * STEP_S, 6),
        "speech_fraction": round(float(active.mean()) if active.size else 0.0, 6),
        "span_count": len(spans),
        "spans": [list(span) for span in spans],
        "model": f"silero-vad {importlib.metadata.version('silero-vad')} (TorchScript)",
    }
    return {"speech": speech.astype(np.float32), "speech_spans": record}


SPEECH_NODE = NodeSpec(
    name="SpeechNode",
    inputs=("wav",),
    outputs=("speech", "speech_spans"),
    config=SpeechConfig,
    summary="speech probability per 20 ms step and spans of speech (Silero VAD)",
    compute=speech_of,
    model=silero_model,
    preload=("torch", "silero_vad"),
    group="audio",
)
