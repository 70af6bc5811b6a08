"""Streaming video decoding with PyAV: RGB frames with their presentation timestamps.

Frames are never indexed by ``index / fps``: variable-frame-rate clips and streams that
start late exist, so each frame carries its own timestamp (seconds from the container's
start). Rotation metadata is applied, so a portrait phone clip comes out upright. Only one
decoded frame is held at a time (two when resampling), so memory stays bounded however
long the clip is. The header's frame count is never used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from dpl_assets.media.probe import open_container
from dpl_assets.outcomes import InputRejected


@dataclass
class VideoFrame:
    """One decoded frame: ``rgb`` uint8 (H, W, 3), upright; ``time_s`` from container start."""

    time_s: float
    rgb: np.ndarray


def _upright(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    # Display-matrix rotation is counter-clockwise in degrees; np.rot90 turns the same way.
    quarter_turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def decode_frames(path: Path | str) -> Iterator[VideoFrame]:
    """Every frame of the first video stream, in presentation order.

    Raises :class:`InputRejected` naming the file when it cannot be opened or has no
    video stream. Frames that fail to decode mid-stream end the iteration with the error.
    """
    with open_container(path) as container:
        if not container.streams.video:
            raise InputRejected(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: ~1.3-1.5x faster 1080p decode here
        origin = container.start_time / av.time_base if container.start_time else 0.0
        for frame in container.decode(stream):
            if frame.time is None:  # no timestamp at all: cannot be placed in time
                continue
            yield VideoFrame(time_s=float(frame.time) - origin, rgb=_upright(frame))


def resample_frames(frames: Iterator[VideoFrame], fps: float) -> Iterator[VideoFrame]:
    """Frames at a constant ``fps``, chosen by timestamp (nearest frame, earlier on ties).

    Output tick k is at ``t0 + k / fps`` for every tick before the end of the last input
    frame (its timestamp plus the previous frame interval), like ffmpeg's ``fps`` filter.
    Each output frame carries its tick time.
    """
    step = 1.0 / fps
    previous: VideoFrame | None = None
    start = tick = None
    index = 0
    last_interval = step
    for frame in frames:
        if previous is None:
            start, previous = frame.time_s, frame
            continue
        assert start is not None
        last_interval = frame.time_s - previous.time_s or last_interval
        while (tick := start + index * step) < frame.time_s:
            nearer = previous if tick - previous.time_s <= frame.time_s - tick else frame
            yield VideoFrame(time_s=tick, rgb=nearer.rgb)
            index += 1
        previous = frame
    if previous is None or start is None:
        return
    end = previous.time_s + last_interval
    while (tick := start + index * step) < end - 1e-9:
        yield VideoFrame(time_s=tick, rgb=previous.rgb)
        index += 1
