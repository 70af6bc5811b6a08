"""``AvSyncNode``: the audio-visual offset of every face track, and which face speaks.

The ``correlation`` backend (default, no weights) correlates each track's mouth opening
with the audio's activity (:mod:`dpl_assets.nodes.av_sync`); the ``syncnet`` backend runs
user-supplied SyncNet weights (:mod:`dpl_assets.nodes.syncnet`). The record says, per
track, the best lag, the confidence and the whole lag curve, then the speaking track, its
offset and whether it is in sync: ``min_confidence`` cleared and, for correlations, a
peak beyond chance for the clip's length (``significance`` >= 4, see
:mod:`dpl_assets.nodes.av_sync`). The packers can shift the training
files' audio by that offset (their ``av_offset`` param, :mod:`dpl_assets.packing.av_offset`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media.timeline import NOMINAL_FPS
from dpl_assets.nodes.audio import volume_envelope
from dpl_assets.nodes.av_sync import (
    DEFAULT_MAX_LAG_FRAMES,
    LAG_CONVENTION,
    MIN_SIGNIFICANCE,
    TrackSync,
    audio_activity,
    sync_tracks,
)
from dpl_assets.nodes.face_tracking import track_arrays
from dpl_assets.outcomes import InputRejected
from dpl_assets.packing.video_pack import resample_audio_feature
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.image_stack import nominal_fps
from dpl_assets.storage.video_io import VideoIO

SPEECH_INPUT: tuple[str, ...] = ("speech",)
"""The speech probability (``SpeechNode``), an optional input."""

DEFAULT_MIN_CONFIDENCE = {"correlation": 0.25, "syncnet": 3.0}
"""Confidence a speaking track needs to count as in sync, per backend: correlation peak
minus median (on the talking-face test clips, a mouth following the voice scores ~0.66, a
face mouthing other speech 0.19, a still mouth 0.03; not tuned on real video), SyncNet's
median minus minimum distance (3, the usual filter of SyncNet-scored data)."""


class AvSyncConfig(NodeConfig):
    """``AvSyncNode``."""

    backend: Literal["correlation", "syncnet"] = Field(
        default="correlation",
        description="'correlation' (mouth opening against loudness and speech probability; "
        "no weights) or 'syncnet' (SyncNet weights you bring, syncnet_v2 layout).",
    )
    max_lag_frames: int = Field(
        default=DEFAULT_MAX_LAG_FRAMES, ge=1, le=100, description="Lags tried: -this..+this."
    )
    min_confidence: float | None = Field(
        default=None,
        description="Confidence the speaking track needs to be 'in_sync' (None: 0.25 for "
        "correlation, 3.0 for syncnet).",
    )
    checkpoint: str | None = Field(
        default=None, description="syncnet backend: the syncnet_v2 .model file (state dict)."
    )
    device: str = Field(default="auto", description="syncnet backend: 'auto', 'cpu', 'cuda:N'.")
    num_workers: int = Field(default=2, ge=1, description="Videos analysed in parallel.")


def activity_on_frames(io: VideoIO, count: int) -> np.ndarray | None:
    """The audio's activity on the video's ``count`` frames, float64 (count,): ``volume``
    (or the envelope of ``wav``) times the ``speech`` probability when there is one, each
    resampled onto the frame times (silence after the audio's end); None when the video
    has neither ``volume`` nor ``wav``."""
    times = io.frame_times(count)
    volume = io.optional("volume")
    if volume is None:
        wav = io.optional("wav")
        if wav is None:
            return None
        volume = volume_envelope(wav)
    speech = io.optional("speech")
    on_frames = resample_audio_feature("volume", volume, times)
    speech_on_frames = None if speech is None else resample_audio_feature("speech", speech, times)
    return audio_activity(on_frames, speech_on_frames)


def _rounded(value: float, decimals: int = 4) -> float | None:
    return round(float(value), decimals) if np.isfinite(value) else None


def sync_record(
    results: list[TrackSync],
    speaking: int | None,
    frames_with_face: list[int],
    *,
    backend: str,
    curve_kind: str,
    fps: float,
    max_lag: int,
    min_confidence: float,
) -> dict[str, Any]:
    """The ``av_sync`` record (JSON-able) of per-track results (track ``i`` of the
    ``face_tracks`` record, ``0`` the followed one) and the speaking track's index."""
    tracks = [
        {
            "track": index,
            "followed": index == 0,
            "frames_with_face": frames_with_face[index],
            "best_lag_frames": result.best_lag if np.isfinite(result.curve).any() else None,
            "confidence": _rounded(result.confidence),
            "significance": _rounded(result.significance),
            "peak": _rounded(result.peak),
            "median": _rounded(result.median),
            "curve": [_rounded(value) for value in result.curve],
        }
        for index, result in enumerate(results)
    ]
    chosen = None if speaking is None else results[speaking]
    confidence = 0.0 if chosen is None else chosen.confidence
    return {
        "backend": backend,
        "curve_kind": curve_kind,
        "lag_convention": LAG_CONVENTION,
        "fps": round(fps, 4),
        "max_lag_frames": max_lag,
        "min_confidence": min_confidence,
        "min_significance": MIN_SIGNIFICANCE if curve_kind == "correlation" else None,
        "tracks": tracks,
        "speaking_track": speaking,
        "offset_frames": None if chosen is None else chosen.best_lag,
        "offset_seconds": None if chosen is None else round(chosen.best_lag / fps, 4),
        "confidence": round(float(confidence), 4),
        "significance": None if chosen is None else _rounded(chosen.significance),
        "in_sync": bool(chosen is not None and chosen.in_sync(min_confidence)),
    }


def av_sync_of(io: VideoIO, config: AvSyncConfig) -> dict[str, Any]:
    """The ``av_sync`` record of the video: each track of ``face_tracks`` against the
    audio (the ``correlation`` or ``syncnet`` backend), the speaking track and its offset
    (frames, positive = audio late). Rejects a video without any face track, or (the
    correlation backend) without ``volume`` or ``wav``."""
    record = io["face_tracks"]
    arrays = track_arrays(record)
    if not arrays:
        raise InputRejected("no face track to sync with the audio")
    count = int(record["frames"])
    fps = nominal_fps(io.frame_times(count)) or NOMINAL_FPS  # one frame: no interval
    minimum = config.min_confidence
    if minimum is None:
        minimum = DEFAULT_MIN_CONFIDENCE[config.backend]
    if config.backend == "syncnet":
        from dpl_assets.nodes.syncnet import sync_tracks_syncnet

        results, speaking = sync_tracks_syncnet(
            io.model, io["images"], [boxes for boxes, _ in arrays], io["wav"], config.max_lag_frames
        )
        kind = "distance"
    else:
        activity = activity_on_frames(io, count)
        if activity is None:
            raise InputRejected("no audio: the audio-visual sync needs the volume or the wav")
        results, speaking = sync_tracks([m for _, m in arrays], activity, config.max_lag_frames)
        kind = "correlation"
    return {
        "av_sync": sync_record(
            results,
            speaking,
            [int(np.isfinite(mouth).sum()) for _, mouth in arrays],
            backend=config.backend,
            curve_kind=kind,
            fps=fps,
            max_lag=config.max_lag_frames,
            min_confidence=minimum,
        )
    }


def syncnet_model(config: AvSyncConfig, device: Any) -> Any:
    """The syncnet backend's model on ``device()`` (None for the correlation backend: it
    has no model and never leases a device)."""
    if config.backend != "syncnet":
        return None
    from dpl_assets.nodes.syncnet import load_syncnet

    if not config.checkpoint:
        raise InputRejected("the syncnet backend needs checkpoint: a syncnet_v2 .model file")
    return load_syncnet(config.checkpoint, device())


AV_SYNC_NODE = NodeSpec(
    name="AvSyncNode",
    inputs=("face_tracks", "images", "wav"),
    outputs=("av_sync",),
    config=AvSyncConfig,
    summary="audio-visual offset per face track and the speaking face",
    optional_inputs=("volume", *SPEECH_INPUT),
    compute=av_sync_of,
    model=syncnet_model,
    group="faces",
)
