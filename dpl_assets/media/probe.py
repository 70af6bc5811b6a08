"""Container probing with PyAV: what a media file holds, which streams the pipeline uses,
and the first checks of bad input.

Stream choice (ffmpeg's own rule, made explicit and recorded in ``probe``):
- video: never an attached picture (cover art) nor a stream of fewer than two frames (a
  still picture in Matroska, which has no attached-picture flag); among the rest, a stream
  flagged ``default`` first, then the largest picture, then the lowest index;
- audio: the stream flagged ``default`` first, then the lowest index.

Header values (durations, frame counts) are recorded as the header states them and are
never trusted for computation: nodes compare what decodes against them to spot truncation.
Stream start times are on the container clock (see :mod:`dpl_assets.media.timeline`).

Several steps of one run ask for the same file's probe (the frame keeping's size estimate,
the ``probe`` record, the audio extraction), and opening a container takes 3.5-4 ms (PyAV
reads and analyses its first packets): :func:`probe_media` answers a repeated question from
a small per-process memo, keyed by the file's identity (device, inode, size, modification
and change times), so a file replaced or rewritten since is probed again. Where file times
advance coarsely (kernels before 6.13 update them every few milliseconds; NFS clients cache
attributes), a file rewritten in place to the same size within that window would be
answered from the memo until it changes again; sources are not rewritten while a run
reads them.
"""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
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
    start_time_s: float | None = None  # on the container clock (0 = the container's start)
    default: bool = False  # the "default" disposition flag
    attached_pic: bool = False  # cover art, not a moving picture
    channel_layout: str | None = None  # audio: "mono", "stereo", "5.1", ...
    channel_names: list[str] | None = None  # audio: "FL", "FR", "FC", ... in stream order


@dataclass
class MediaProbe:
    """What one media file holds; ``to_json()`` is the ``probe`` datatype's record."""

    source: str
    size_bytes: int
    container: str
    duration_s: float | None
    streams: list[StreamInfo] = field(default_factory=list)
    start_time_s: float = 0.0  # the container's start on its own time base (the clock's origin)
    video_stream: int | None = None  # index of the video stream the pipeline decodes
    audio_stream: int | None = None  # index of the audio stream the pipeline decodes
    stream_choice: list[str] = field(default_factory=list)  # why those, in words

    def first(self, kind: str) -> StreamInfo | None:
        return next((s for s in self.streams if s.kind == kind), None)

    def chosen(self, kind: str) -> StreamInfo | None:
        """The stream of ``kind`` ("video" | "audio") the pipeline uses, or None."""
        index = self.video_stream if kind == "video" else self.audio_stream
        return self.streams[index] if index is not None else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


NOT_MEDIA = "not a media file (no audio or video stream found)"
"""The reason for a file that holds no audio or video: text, a document, random bytes."""

_MEDIA_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"),
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"), (0, b"FLV"), (0, b"OggS"), (0, b"fLaC"), (0, b"ID3"),
    (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),  # MPEG program stream, video
    (0, b"\x30\x26\xb2\x75"),  # ASF, WMV
)  # fmt: skip
"""(offset, bytes) that start a media container: such a file that does not open is a
damaged one, not a file of another kind."""


def looks_like_media(path: Path) -> bool:
    """Whether ``path`` starts like a media container or stream (by its first bytes)."""
    with path.open("rb") as file:
        head = file.read(4096)
    if any(head[offset : offset + len(magic)] == magic for offset, magic in _MEDIA_SIGNATURES):
        return True
    if len(head) > 2 * 188 and head[0] == head[188] == head[376] == 0x47:  # MPEG-TS packets
        return True
    return head[:1] == b"\xff" and len(head) > 1 and head[1] & 0xE0 == 0xE0  # MP3/ADTS sync


def open_container(path: Path | str) -> Any:
    """An open PyAV input container; rejects missing, empty and unreadable files, naming them.

    A file that does not open is :data:`NOT_MEDIA` unless its first bytes are those of a
    media container (then its header is lost or it is damaged). Reasons never carry PyAV's
    errno, only its words.
    """
    path = Path(path)
    if not path.is_file():
        raise InputRejected(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputRejected(f"{path}: zero-byte file")
    try:
        return av.open(file_url(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        if not looks_like_media(path):
            raise InputRejected(f"{path}: {NOT_MEDIA}") from error
        words = getattr(error, "strerror", None) or str(error)
        raise InputRejected(
            f"{path}: cannot open as a media container ({words}); header lost or file damaged"
        ) from error


PROBE_MEMO_SIZE = 256
"""Probes kept per process (a few kB each): more than the videos of one run."""

_FileIdentity = tuple[str, int, int, int, int, int]
_memo: OrderedDict[tuple[_FileIdentity, bool], MediaProbe] = OrderedDict()
_memo_lock = threading.Lock()


def probe_media(path: Path | str, read_rotation: bool = True) -> MediaProbe:
    """Open ``path`` and describe its streams.

    ``read_rotation`` decodes the first video frame for its display rotation; callers that
    only need the audio side skip that decode (the video stream's ``rotation_deg`` is then
    None). A file probed before in this process and unchanged since (same device, inode,
    size, modification and change times) is not opened again; every call returns a probe
    of its own.

    Raises :class:`InputRejected` naming the file when it is missing, empty, or cannot be
    opened as a media container (lost or damaged header), or holds no audio/video stream.
    """
    path = Path(path)
    identity = _file_identity(path)
    if identity is not None:
        with _memo_lock:
            for with_rotation in (True,) if read_rotation else (False, True):
                known = _memo.get((identity, with_rotation))
                if known is not None:
                    _memo.move_to_end((identity, with_rotation))
                    return _copy(known, path, read_rotation)
    probe = _probe_media(path, read_rotation)
    if identity is not None:
        with _memo_lock:
            _memo[(identity, read_rotation)] = _copy(probe, path, read_rotation)
            while len(_memo) > PROBE_MEMO_SIZE:
                _memo.popitem(last=False)
    return probe


def _file_identity(path: Path) -> _FileIdentity | None:
    """What tells this file's content apart from another's or an earlier one's; None when
    it cannot be read (:func:`open_container` then names the problem)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (
        os.path.abspath(path),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    )


def _copy(probe: MediaProbe, path: Path, read_rotation: bool) -> MediaProbe:
    """A probe of the caller's own (callers may change it): its ``source`` the path as
    given, without the rotation unless ``read_rotation`` (as :func:`_probe_media` gives it)."""
    mine = copy.deepcopy(probe)
    mine.source = str(path)
    if not read_rotation and mine.video_stream is not None:
        mine.streams[mine.video_stream].rotation_deg = None
    return mine


def _probe_media(path: Path, read_rotation: bool) -> MediaProbe:
    """:func:`probe_media` itself: open the container and read its streams."""
    with open_container(path) as container:
        origin = container_start_s(container)
        streams = [_describe(stream, origin) for stream in container.streams]
        audio, audio_why = choose_audio_stream(container)
        video, video_why = choose_video_stream(container)
        if video is not None and read_rotation:
            streams[video.index].rotation_deg = _first_frame_rotation(container, video)
        probe = MediaProbe(
            source=str(path),
            size_bytes=path.stat().st_size,
            container=container.format.name,
            duration_s=container.duration / av.time_base if container.duration else None,
            streams=streams,
            start_time_s=origin,
            video_stream=video.index if video is not None else None,
            audio_stream=audio.index if audio is not None else None,
            stream_choice=[why for why in (video_why, audio_why) if why],
        )
    if not any(s.kind in ("audio", "video") for s in probe.streams):
        raise InputRejected(f"{path}: {NOT_MEDIA}")
    return probe


def container_start_s(container: Any) -> float:
    """The container's start time in seconds: the origin of the container clock."""
    return container.start_time / av.time_base if container.start_time else 0.0


def _flag(stream: Any, name: str) -> bool:
    return bool(stream.disposition & getattr(av.stream.Disposition, name))


def choose_audio_stream(container: Any) -> tuple[Any | None, str]:
    """The audio stream to decode (``default``-flagged, else the first) and why, in words."""
    streams = list(container.streams.audio)
    if not streams:
        return None, ""
    flagged = [s for s in streams if _flag(s, "default")]
    chosen = flagged[0] if flagged else streams[0]
    if len(streams) == 1:
        return chosen, f"audio: stream {chosen.index}, the only audio stream"
    rule = "flagged default" if flagged else "the first (none is flagged default)"
    return chosen, f"audio: stream {chosen.index} of {len(streams)} audio streams, {rule}"


STILL_SCAN_PACKETS = 2000
"""Packets read at most to tell a still picture (one frame) from a moving video stream,
when a file has several video streams."""


def choose_video_stream(container: Any) -> tuple[Any | None, str]:
    """The video stream to decode (see the module docstring) and why, in words.

    With several candidates, packets are counted (demuxed, not decoded, in a second handle
    on the same file, so ``container`` stays where it is) to recognize streams of one frame.
    """
    streams = list(container.streams.video)
    if not streams:
        return None, ""
    if len(streams) == 1:
        return streams[0], f"video: stream {streams[0].index}, the only video stream"
    moving = [s for s in streams if not _flag(s, "attached_pic")]
    if len(moving) > 1:
        counts = _packet_counts(container, moving)
        moving = [s for s in moving if counts[s.index] > 1] or moving
    if not moving:  # nothing but pictures: decode the first
        return streams[0], f"video: stream {streams[0].index}, all video streams are pictures"
    chosen = max(
        moving,
        key=lambda s: (_flag(s, "default"), s.codec_context.width * s.codec_context.height,
                       -s.index),
    )  # fmt: skip
    skipped = sorted(s.index for s in streams if s is not chosen)
    return chosen, (
        f"video: stream {chosen.index} (moving, {chosen.codec_context.width}x"
        f"{chosen.codec_context.height}); not {skipped} (pictures, stills or smaller)"
    )


def _packet_counts(container: Any, streams: list[Any]) -> dict[int, int]:
    """Packets with data per stream, counting up to 2 each (or :data:`STILL_SCAN_PACKETS`)."""
    counts = {s.index: 0 for s in streams}
    with av.open(container.name, mode="r", metadata_errors="ignore") as scan:
        try:
            wanted = [scan.streams[index] for index in counts]
            for read, packet in enumerate(scan.demux(wanted)):
                if packet.size:
                    counts[packet.stream.index] += 1
                if read >= STILL_SCAN_PACKETS or min(counts.values()) >= 2:
                    break
        except av.FFmpegError:
            pass  # damaged data: judge on what was read
    return counts


def _describe(stream: Any, origin: float) -> StreamInfo:
    codec = stream.codec_context.name if stream.codec_context else None
    start = _seconds(stream.start_time, stream.time_base)
    info = StreamInfo(
        index=stream.index,
        kind=stream.type,
        codec=codec,
        duration_s=_seconds(stream.duration, stream.time_base),
        start_time_s=round(start - origin, 6) if start is not None else None,
        default=_flag(stream, "default"),
        attached_pic=_flag(stream, "attached_pic"),
    )
    if stream.type == "audio":
        info.sample_rate_hz = stream.codec_context.sample_rate
        info.channels = stream.codec_context.channels
        layout = stream.codec_context.layout
        info.channel_layout = layout.name if layout is not None else None
        info.channel_names = [c.name for c in layout.channels] if layout is not None else None
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


def packet_span_s(packet: Any, origin: float) -> tuple[float, float] | None:
    """(start_s, end_s) of ``packet`` on the container clock whose start is ``origin``
    seconds; None when the packet carries no timestamp."""
    if packet.pts is None or packet.time_base is None:
        return None
    start = float(packet.pts * packet.time_base) - origin
    return start, start + float((packet.duration or 0) * packet.time_base)


def timed_packets(path: Path | str, stream_index: int) -> Iterator[tuple[Any, float, float]]:
    """Demux stream ``stream_index`` of ``path``: (packet, start_s, end_s) on the container
    clock for every packet with a timestamp. Damaged data ends the scan where it starts."""
    with open_container(path) as container:
        origin = container_start_s(container)
        try:
            for packet in container.demux(container.streams[stream_index]):
                span = packet_span_s(packet, origin)
                if span is not None:
                    yield packet, *span
        except av.FFmpegError:
            return


def stream_end_s(path: Path | str, stream_index: int) -> float | None:
    """Where stream ``stream_index`` of ``path`` ends on the container clock (seconds):
    the latest packet's timestamp plus its duration, read by demuxing (no decoding).

    None when no packet carries a timestamp. Damaged data ends the scan where it starts.
    """
    return max((end for _, _, end in timed_packets(path, stream_index)), default=None)
