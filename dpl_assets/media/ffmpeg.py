"""Running the ffmpeg binary safely.

The binary comes from ``imageio-ffmpeg`` (a registry wheel, always installed with us), or
from ``DPL_FFMPEG`` when a user wants their own build. Commands are argument lists, never
shell strings, and input paths are passed as ``file:`` URLs so that a name beginning with
``-`` or containing ``:`` (``concat:``, ``http:``) is always read as a plain local file.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


class FFmpegError(RuntimeError):
    """ffmpeg exited with an error; the message holds the tail of its stderr."""


@functools.cache
def ffmpeg_executable() -> str:
    """Path of the ffmpeg binary to run (``DPL_FFMPEG`` overrides the bundled one)."""
    override = os.environ.get("DPL_FFMPEG")
    if override:
        return override
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def file_url(path: Path | str) -> str:
    """An ffmpeg input/output URL that can only mean this local file."""
    return "file:" + str(Path(path).resolve())


def run_ffmpeg(args: Sequence[str], *, what: str) -> bytes:
    """Run ``ffmpeg args...`` and return its stdout; raise :class:`FFmpegError` on failure.

    ``what`` names the job in the error message (e.g. the input file).
    """
    return run_ffmpeg_logged(args, what=what)[0]


def run_ffmpeg_logged(args: Sequence[str], *, what: str) -> tuple[bytes, str]:
    """:func:`run_ffmpeg` that also returns the errors ffmpeg logged while it went on (a
    damaged packet is logged and skipped; the exit status stays 0)."""
    command = [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    # A process group of its own: the terminal's Ctrl-C stops dpl's steps between videos,
    # not ffmpeg mid-file (a killed decoder looks like a bad video: dpl_assets.interrupts).
    completed = subprocess.run(command, capture_output=True, check=False, start_new_session=True)
    log = completed.stderr.decode("utf-8", errors="replace").strip()
    if completed.returncode != 0:
        raise FFmpegError(f"ffmpeg failed on {what} (exit {completed.returncode}): {log[-1500:]}")
    return completed.stdout, log
