"""An mp4 (H.264 + AAC) written by one ffmpeg process from RGB frames piped to its stdin.

The pipeline's ffmpeg (:func:`~dpl_assets.media.ffmpeg.ffmpeg_executable`) gets raw RGB
frames one at a time (memory stays at one frame whatever the clip's length, and the frame
count need not be known up front) and the 16 kHz wav as its second input, read as a
``file:`` URL. Output: H.264 (yuv420p, so odd frame sizes are padded by one black pixel on
the right / bottom) at exactly the given rate (a :class:`~fractions.Fraction`: 30000/1001,
not 29.97), ``+faststart`` so browsers play it while loading.

Frames go down the pipe as RGB and ffmpeg converts them to yuv420p (its scaler filters
the chroma as it halves it). Not OpenCV's ``COLOR_RGB2YUV_I420`` in our process, though it
saves ffmpeg ~0.15 s of CPU per 8 s 640x480 preview: it takes each 2x2 block's chroma from
its top-left pixel alone, so coloured detail one pixel wide (the overlays' lines, a
blocky source's edges) is dropped or aliased, and the files came out 19-20 % larger at the
same CRF (the speaking sample clips' previews, 5 % the silent one's; 2026-12-01).

Audio is cut to start at ``audio_start_s`` of the wav; with ``audio_seconds`` it is padded
with silence past its end, or cut, to exactly that length. ffmpeg's ``-shortest`` is not
used: with padded audio where it stops depends on timing (measured: audio cut at 0.5 s of a
1 s clip), and without padding it would cut the video when the audio is shorter.

Why not moviepy (which the design names for this): measured with moviepy 2.2.1 on this
machine, it does not keep exact frame counts and rates. It passes the rate to ffmpeg as
``"%.02f" % fps`` (30000/1001 becomes 2997/100, 24000/1001 becomes 1199/50) and writes
``int(duration * fps)`` frames (49 frames at 24000/1001 came out as 48). It also needs the
duration before the first frame, reads and re-encodes the audio through a temporary file,
and its 2.2.1 wheel requires pillow<12 (pip would downgrade this environment's Pillow).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO

import numpy as np

from dpl_assets.media.ffmpeg import FFmpegError, ffmpeg_executable, file_url

VIDEO_CODEC_ARGS = (
    "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
    # Frames x264 holds at once (each ~13 MB at 1080p): a 3-frame rate-control lookahead
    # (veryfast: 10), 2 B-frames (3), 2 frame threads (auto: 1.5 per core) and no threaded
    # lookahead buffer. Measured at 1080p: ffmpeg's peak RSS 276 MB instead of 375, the
    # same speed, files of the same size at the same CRF.
    "-x264-params", "rc-lookahead=3:bframes=2:threads=2:sync-lookahead=0",
)  # fmt: skip
# Raw frames queued between the pipe's reader and the decoder (default 8, 6 MB each at 1080p).
INPUT_QUEUE_ARGS = ("-thread_queue_size", "1")
AUDIO_CODEC_ARGS = ("-c:a", "aac", "-b:a", "64k")
_STDERR_TAIL_CHARS = 1500


class _PipeClosed(Exception):
    """ffmpeg stopped reading its stdin (it exited; its stderr says why)."""


@contextlib.contextmanager
def mp4_pipe(
    output: Path,
    size: tuple[int, int],
    rate: Fraction,
    *,
    what: str,
    wav: Path | None = None,
    audio_start_s: float = 0.0,
    audio_seconds: float | None = None,
) -> Iterator[Callable[[np.ndarray], None]]:
    """``with mp4_pipe(output, (width, height), rate, what=...) as write: write(rgb)...``

    Each ``write`` sends one RGB uint8 (height, width, 3) frame (the caller checks shapes).
    On leaving the block ffmpeg finishes ``output``; if it fails, or exits before all frames
    were written, :class:`~dpl_assets.media.ffmpeg.FFmpegError` names ``what`` and quotes the
    tail of ffmpeg's stderr. An exception in the block kills ffmpeg and propagates. ``wav``:
    audio muxed as AAC from ``audio_start_s`` of it, fitted to ``audio_seconds`` if given.
    """
    command = [
        ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        *mp4_arguments(size, rate, wav, audio_start_s, audio_seconds), file_url(output),
    ]  # fmt: skip
    # stderr goes to a file, not a pipe: a chatty ffmpeg can never block on it.
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True,  # not stopped mid-file by Ctrl-C (dpl_assets.interrupts)
        )  # fmt: skip
        stdin = process.stdin
        assert stdin is not None

        def write(rgb: np.ndarray) -> None:
            try:
                stdin.write(rgb.tobytes())  # C order, whatever the strides
            except BrokenPipeError:
                raise _PipeClosed from None

        broken_pipe = False
        try:
            yield write
            stdin.close()
        except (_PipeClosed, BrokenPipeError):
            broken_pipe = True
            _close_quietly(stdin)
        except BaseException:
            process.kill()
            _close_quietly(stdin)
            process.wait()
            raise
        returncode = process.wait()
        if returncode != 0 or broken_pipe:
            raise FFmpegError(f"ffmpeg failed writing {what} (exit {returncode}): {_tail(stderr)}")


def mp4_arguments(
    size: tuple[int, int],
    rate: Fraction,
    wav: Path | None,
    audio_start_s: float = 0.0,
    audio_seconds: float | None = None,
) -> list[str]:
    """ffmpeg arguments after the global options, up to (not including) the output URL."""
    width, height = size
    args = [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{width}x{height}",
        "-framerate", str(rate), *INPUT_QUEUE_ARGS, "-i", "pipe:0",
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
        if audio_seconds is not None:
            # Pad with silence to at least the video's length, then cut to exactly it.
            seconds = f"{audio_seconds:.6f}"
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
