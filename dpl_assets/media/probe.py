"""Container probing with PyAV: what a media file holds, and the first checks of bad input.

Header values (durations, frame counts) are recorded as the header states them and are
never trusted for computation: nodes compare what decodes against them to spot truncation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from dpl_assets.media.ffmpeg import file_url
from dpl_assets.outcomes import InputRejected


@dataclass
class StreamInfo:
    """One stream of a container, as its header describes it (durations in seconds)."""

    index: int
    kind: str  # "video" | "audio" | "subtitle" | "data" | ...
    codec: str | None
    duration_s: float | None
    sample_rate_hz: int | None = None
    channels: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    header_frames: int | None = None
    rotation_deg: float | None = None


@dataclass
class MediaProbe:
    """What one media file holds; ``to_json()`` is the ``probe`` datatype's record."""

    source: str
    size_bytes: int
    container: str
    duration_s: float | None
    streams: list[StreamInfo] = field(default_factory=list)

    def first(self, kind: str) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == kind), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def open_container(path: Path | str) -> Any:
    """An open PyAV input container; rejects missing, empty and unreadable files, naming them."""
    path = Path(path)
    if not path.is_file():
        raise InputRejected(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputRejected(f"{path}: zero-byte file")
    try:
        return av.open(file_url(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise InputRejected(
            f"{path}: cannot open as a media container ({error}); header lost or file damaged"
        ) from error


def probe_media(path: Path | str, read_rotation: bool = True) -> MediaProbe:
    """Open ``path`` and describe its streams.

    ``read_rotation`` decodes the first video frame for its display rotation; callers that
    only need the audio side skip that decode.

    Raises :class:`InputRejected` naming the file when it is missing, empty, or cannot be
    opened as a media container (lost or damaged header), or holds no audio/video stream.
    """
    path = Path(path)
    with open_container(path) as container:
        streams = [_describe(stream) for stream in container.streams]
        video = container.streams.video[0] if container.streams.video else None
        if video is not None and read_rotation:
            streams[video.index].rotation_deg = _first_frame_rotation(container, video)
        probe = MediaProbe(
            source=str(path),
            size_bytes=path.stat().st_size,
            container=container.format.name,
            duration_s=container.duration / av.time_base if container.duration else None,
            streams=streams,
        )
    if not any(s.kind in ("audio", "video") for s in probe.streams):
        raise InputRejected(f"{path}: no audio or video stream")
    return probe


def _describe(stream: Any) -> StreamInfo:
    codec = stream.codec_context.name if stream.codec_context else None
    info = StreamInfo(
        index=stream.index,
        kind=stream.type,
        codec=codec,
        duration_s=_seconds(stream.duration, stream.time_base),
    )
    if stream.type == "audio":
        info.sample_rate_hz = stream.codec_context.sample_rate
        info.channels = stream.codec_context.channels
    elif stream.type == "video":
        rate = stream.average_rate or stream.guessed_rate
        info.fps = float(rate) if rate else None
        info.width = stream.codec_context.width
        info.height = stream.codec_context.height
        info.header_frames = stream.frames or None
    return info


def _first_frame_rotation(container: Any, stream: Any) -> float | None:
    """Display rotation in degrees, read off the first decoded frame (0 when upright)."""
    try:
        for frame in container.decode(stream):
            return float(getattr(frame, "rotation", 0) or 0)
    except av.FFmpegError:
        return None
    return None
