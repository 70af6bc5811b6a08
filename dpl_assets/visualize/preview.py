"""Preview videos: a clip's frames with their overlays, as H.264 + AAC in an mp4.

Frames are checked, drawn on (overlays, a rejected video's banner) and streamed one at a
time to ffmpeg (:mod:`dpl_assets.visualize.mp4_pipe`, which says why it is not moviepy), so
memory stays at one frame whatever the clip's length.

The preview has exactly as many video frames as were given. The audio is put on the
container clock (:mod:`dpl_assets.media.timeline`): the wav's sample k sits at k / 16000 s,
so the preview's audio starts at the first frame's time (``audio_start_s``; a video stream
that starts late does not get the audio from before its first frame). Audio is fitted to
the video when the frame count is known up front (``frame_count``, ``len(frames)`` or the
overlays' N): padded with silence past the audio's end, or cut, to exactly
``frames / fps`` seconds. Otherwise it is muxed from ``audio_start_s`` as it is (a
shorter track just ends early, a longer one outlasts the last frame).

The file is written under a temp name and renamed only when ffmpeg succeeded, so a crash
or an error never leaves a partial preview under the final name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dpl_assets.storage.atomic import atomic_path
from dpl_assets.visualize.mp4_pipe import mp4_pipe
from dpl_assets.visualize.overlay import Overlays, banner, stamp_banner


@dataclass(frozen=True)
class PreviewSummary:
    """What :func:`write_preview` wrote: ``frames`` video frames lasting ``seconds``
    (``frames / fps``), with an AAC audio stream when ``has_audio``."""

    frames: int
    seconds: float
    has_audio: bool


def write_preview(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    wav: Path | None = None,
    overlays: Overlays | None = None,
    frame_count: int | None = None,
    audio_start_s: float = 0.0,
    mark: str | None = None,
) -> PreviewSummary:
    """Encode ``frames`` (RGB uint8 (H, W, 3), all the same size) as an mp4 at ``path``.

    ``fps`` frames per second (the clip's nominal rate); ``wav`` a mono 16 kHz wav muxed as
    AAC (None: no audio); ``overlays`` per-frame annotations drawn on each frame (their
    N must be the number of frames); ``frame_count`` the number of frames when ``frames``
    is an iterator without ``len`` (it lets the audio be fitted exactly, see the module
    docstring); ``audio_start_s`` the first frame's time on the container clock: the wav
    is played from there (cut from t = ``audio_start_s``, not from its sample 0); ``mark``
    a text drawn in a red :func:`~dpl_assets.visualize.overlay.banner` over the bottom of
    every frame (a rejected video's "REJECTED: <reasons>"). Raises
    ValueError naming ``path`` for bad frames (empty input, wrong dtype,
    a changing size, a count that disagrees with the overlays or ``frame_count``) and
    :class:`~dpl_assets.media.ffmpeg.FFmpegError` with the tail of ffmpeg's stderr when
    ffmpeg fails; either way no file appears at ``path``.
    """
    path = Path(path)
    if not fps > 0:
        raise ValueError(f"{path}: fps must be positive, not {fps}")
    if not (np.isfinite(audio_start_s) and audio_start_s >= 0):
        raise ValueError(f"{path}: audio_start_s must be a time >= 0, not {audio_start_s}")
    if wav is not None and not Path(wav).is_file():
        raise FileNotFoundError(f"{path}: the audio file {wav} does not exist")
    expected = _known_frame_count(path, frames, overlays, frame_count)
    stream = iter(frames)
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    shape = _check_frame(path, 0, first, None)
    rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100, 25.0 -> 25
    audio_seconds = None if expected is None else float(expected / rate)
    band = banner(shape[1], mark) if mark else None
    with atomic_path(path) as temp:
        with mp4_pipe(
            temp,
            (shape[1], shape[0]),
            rate,
            what=f"the preview {path}",
            wav=wav,
            audio_start_s=audio_start_s,
            audio_seconds=audio_seconds,
        ) as write:
            count = 0
            for index, rgb in enumerate(itertools.chain([first], stream)):
                _check_frame(path, index, rgb, shape)
                drawn = overlays.draw(index, rgb) if overlays is not None else rgb
                write(drawn if band is None else stamp_banner(drawn, band, where="bottom"))
                count = index + 1
        if expected is not None and count != expected:
            raise ValueError(f"{path}: {count} frames given where {expected} were announced")
    return PreviewSummary(frames=count, seconds=float(count / rate), has_audio=wav is not None)


def _known_frame_count(
    path: Path, frames: Iterable[np.ndarray], overlays: Overlays | None, given: int | None
) -> int | None:
    """The frame count known before streaming (``given``, ``len(frames)``, the overlays')."""
    counts = {
        int(n)
        for n in (
            given,
            len(frames) if isinstance(frames, Sized) else None,
            overlays.frame_count if overlays is not None else None,
        )
        if n is not None
    }
    if len(counts) > 1:
        raise ValueError(
            f"{path}: frame_count, the frames and the overlays disagree on the count: {counts}"
        )
    return counts.pop() if counts else None


def _check_frame(
    path: Path, index: int, rgb: np.ndarray, shape: tuple[int, ...] | None
) -> tuple[int, ...]:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3:
        raise ValueError(f"{path}: frame {index} is not an RGB uint8 (H, W, 3) array")
    if rgb.shape[2] != 3 or (shape is not None and rgb.shape != shape):
        raise ValueError(f"{path}: frame {index} has shape {rgb.shape}, the preview {shape}")
    return tuple(rgb.shape)
