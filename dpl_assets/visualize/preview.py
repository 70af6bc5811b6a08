"""Preview videos: a clip's frames with their overlays, as H.264 + AAC in an mp4.

One ffmpeg process (the pipeline's binary, :func:`~dpl_assets.media.ffmpeg.ffmpeg_executable`)
does everything: raw RGB frames are piped to its stdin one at a time, so memory stays at
one frame whatever the clip's length, and the 16 kHz wav is its second input, read as a
``file:`` URL. The output is H.264 (yuv420p, so odd frame sizes are padded by one black
pixel on the right / bottom), with ``+faststart`` so browsers play it while loading.

The preview has exactly as many video frames as were given. The audio is put on the
container clock (:mod:`dpl_assets.media.timeline`): the wav's sample k sits at k / 16000 s,
so the preview's audio starts at the first frame's time (``audio_start_s``; a video stream
that starts late does not get the audio from before its first frame). Audio is fitted to
the video when the frame count is known up front (``frame_count``, ``len(frames)`` or the
overlays' N): padded with silence past the audio's end, or cut, to exactly
``frames / fps`` seconds. Otherwise it is muxed from ``audio_start_s`` as it is (a
shorter track just ends early, a longer one outlasts the last frame): ffmpeg's
``-shortest`` is not used, because with padded audio where it stops depends on timing
(measured: audio cut at 0.5 s of a 1 s clip), and without padding it would cut the video
when the audio is shorter.

The file is written under a temp name and renamed only when ffmpeg succeeded, so a crash
or an error never leaves a partial preview under the final name.
"""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import tempfile
from collections.abc import Iterable, Sized
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np

from dpl_assets.media.ffmpeg import FFmpegError, ffmpeg_executable, file_url
from dpl_assets.storage.atomic import atomic_path
from dpl_assets.visualize.overlay import Overlays, banner, stamp_banner

VIDEO_CODEC_ARGS = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "23")
AUDIO_CODEC_ARGS = ("-c:a", "aac", "-b:a", "64k")
_STDERR_TAIL_CHARS = 1500


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
    command = [
        ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        *_arguments((shape[1], shape[0]), rate, wav, expected, audio_start_s),
    ]  # fmt: skip

    with atomic_path(path) as temp, tempfile.TemporaryFile() as stderr:
        command.append(file_url(temp))
        # stderr goes to a file, not a pipe: a chatty ffmpeg can never block on it.
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr
        )
        assert process.stdin is not None
        count, broken_pipe = 0, False
        band = banner(shape[1], mark) if mark else None
        try:
            for index, rgb in enumerate(itertools.chain([first], stream)):
                _check_frame(path, index, rgb, shape)
                drawn = overlays.draw(index, rgb) if overlays is not None else rgb
                if band is not None:
                    drawn = stamp_banner(drawn, band, where="bottom")
                process.stdin.write(drawn.tobytes())  # C order, whatever the strides
                count = index + 1
            process.stdin.close()
        except BrokenPipeError:
            broken_pipe = True  # ffmpeg exited early; its stderr says why
            _close_quietly(process.stdin)
        except BaseException:
            process.kill()
            _close_quietly(process.stdin)
            process.wait()
            raise
        returncode = process.wait()
        if returncode != 0 or broken_pipe:
            raise FFmpegError(
                f"ffmpeg failed writing the preview {path} (exit {returncode}): {_tail(stderr)}"
            )
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


def _arguments(
    size: tuple[int, int],
    rate: Fraction,
    wav: Path | None,
    expected: int | None,
    audio_start_s: float = 0.0,
) -> list[str]:
    """ffmpeg arguments after the global options, up to (not including) the output URL."""
    width, height = size
    args = [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{width}x{height}",
        "-framerate", str(rate), "-i", "pipe:0",
    ]  # fmt: skip
    if wav is not None:
        args += ["-i", file_url(wav)]
    args += ["-map", "0:v:0"]
    if width % 2 or height % 2:
        # yuv420p halves the chroma planes: both sides must be even.
        args += ["-vf", f"pad={width + width % 2}:{height + height % 2}:0:0"]
    args += [*VIDEO_CODEC_ARGS, "-pix_fmt", "yuv420p"]
    if wav is not None:
        args += ["-map", "1:a:0"]
        # The wav is on the container clock: play it from the first frame's time.
        filters = [f"atrim=start={audio_start_s:.6f}", "asetpts=PTS-STARTPTS"]
        if expected is not None:
            # Pad with silence to at least the video's length, then cut to exactly it.
            seconds = f"{float(expected / rate):.6f}"
            filters += [f"apad=whole_dur={seconds}", f"atrim=duration={seconds}"]
        args += ["-af", ",".join(filters)]
        args += [*AUDIO_CODEC_ARGS]
    return [*args, "-movflags", "+faststart", "-f", "mp4"]


def _close_quietly(pipe: IO[bytes]) -> None:
    """Close a pipe whose reader may be gone (the unflushed rest is dropped, no warning)."""
    with contextlib.suppress(BrokenPipeError):
        pipe.close()


def _tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    return stderr.read().decode("utf-8", errors="replace").strip()[-_STDERR_TAIL_CHARS:]
