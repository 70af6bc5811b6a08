"""``SegmentNode``: each video's training segments and why the rest was dropped; its asset
is generated from this declaration.

Per frame of ``images``, a frame is ruled out for (reasons of :mod:`dpl_assets.nodes.segments`):
``no face`` (``face_mask`` 0), ``no speech`` (outside every ``speech_spans`` span, for
silences of at least ``min_silence_seconds``), ``low quality`` (a face failing a
``frame_quality_ok`` threshold), ``low sync confidence`` (the clip's ``av_sync`` is not in
sync) and ``followed face not speaking`` (``av_sync`` found another track speaking); the
inputs a graph does not make are not used. Scene cuts (``scenes``) end segments.

Outputs: ``segments``, a JSON record (:meth:`~dpl_assets.nodes.segments.SegmentPlan.to_record`:
kept ``[start, end)`` frame ranges, dropped spans with reasons, seconds kept and dropped per
reason, plus the parameters), and ``segment_ids``, int32 (N,) per frame (the kept segment's
index, -1 where dropped), which the packers pack like any per-frame array and the reader
uses to serve windows inside one kept segment only.
"""

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media.timeline import frames_in_spans
from dpl_assets.nodes.segments import (
    LOW_QUALITY,
    LOW_SYNC,
    NO_FACE,
    NO_SPEECH,
    NOT_SPEAKING,
    long_silences,
    plan_segments,
    segment_ids,
)
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class SegmentConfig(NodeConfig):
    """``SegmentNode``."""

    min_seconds: float = Field(default=1.0, gt=0, description="Shortest segment kept (s).")
    max_seconds: float = Field(
        default=10.0, gt=0, description="Longest segment (s); longer runs are split evenly."
    )
    min_silence_seconds: float = Field(
        default=0.5,
        ge=0,
        description="A pause in speech cuts only when it lasts at least this long (s).",
    )
    use_sync: bool = Field(
        default=True, description="Drop a clip whose av_sync is not in sync (when made)."
    )

    @model_validator(mode="after")
    def _lengths_agree(self) -> "SegmentConfig":
        """A graph asking for segments longer than they may be fails before any work."""
        if self.max_seconds < self.min_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) is below min_seconds ({self.min_seconds})"
            )
        return self


def segments_of(io: VideoIO, config: SegmentConfig) -> dict[str, Any]:
    """The video's kept segments and dropped spans (see the module docstring). Rejects a
    video whose ``face_mask`` and ``images`` disagree in frame count."""
    face_mask = np.asarray(io["face_mask"])
    count = int(face_mask.shape[0])
    times = io.frame_times(count)
    has_face = face_mask != 0
    excluded: dict[str, np.ndarray] = {NO_FACE: ~has_face}
    spans = io.optional("speech_spans")
    if spans is not None:
        speech = frames_in_spans(times, spans["spans"])
        excluded[NO_SPEECH] = long_silences(speech, times, config.min_silence_seconds)
    quality_ok = io.optional("frame_quality_ok")
    if quality_ok is not None:
        excluded[LOW_QUALITY] = (np.asarray(quality_ok) == 0) & has_face
    sync = io.optional("av_sync") if config.use_sync else None
    if sync is not None:
        speaking = sync.get("speaking_track")
        excluded[LOW_SYNC] = np.full(count, not sync.get("in_sync", False))
        excluded[NOT_SPEAKING] = np.full(count, speaking is not None and speaking != 0)
    scenes = io.optional("scenes")
    cuts = [] if scenes is None else [int(frame) for frame in scenes["cut_frames"]]
    plan = plan_segments(
        times,
        {reason: mask for reason, mask in excluded.items() if mask.any()},
        cuts,
        min_seconds=config.min_seconds,
        max_seconds=config.max_seconds,
    )
    record = {
        "frames": count,
        "segment_count": len(plan.kept),
        **plan.to_record(),
        "dropped_total_s": round(sum(plan.dropped_s.values()), 3),
        "inputs_used": sorted(
            key
            for key, value in (
                ("speech_spans", spans),
                ("frame_quality_ok", quality_ok),
                ("av_sync", sync),
                ("scenes", scenes),
            )
            if value is not None
        ),
        "min_seconds": config.min_seconds,
        "max_seconds": config.max_seconds,
        "min_silence_seconds": config.min_silence_seconds,
    }
    return {"segments": record, "segment_ids": segment_ids(plan.kept, count)}


SEGMENT_NODE = NodeSpec(
    name="SegmentNode",
    inputs=("face_mask", "images"),
    outputs=("segments", "segment_ids"),
    config=SegmentConfig,
    optional_inputs=("speech_spans", "frame_quality_ok", "av_sync", "scenes"),
    summary="training segments (kept frame ranges) and the reasons for every dropped span",
    compute=segments_of,
    group="curation",
)
