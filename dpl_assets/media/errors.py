"""Decode errors as input rejections: media that does not decode is that video's outcome.

Every node that decodes media handles what it expects; this is the net under all of them
(the per-video loop uses it), so a decode error anywhere, in any step, rejects its video
with a reason naming the file instead of failing the batch and every rerun after it.
"""

from __future__ import annotations

from pathlib import Path

import av
import soundfile

from dpl_assets.media.ffmpeg import FFmpegError


def decode_rejection(error: BaseException, source: Path | str | None = None) -> str | None:
    """The rejection reason for ``error`` when it is a media decode error, else None.

    The reason names the file: PyAV's own file name when the error carries one, else
    ``source``; the messages of ffmpeg (:class:`FFmpegError`) and libsndfile already name
    their input.
    """
    if isinstance(error, FFmpegError | soundfile.LibsndfileError):
        return f"media does not decode: {error}"
    if isinstance(error, av.FFmpegError):
        named = getattr(error, "filename", None) or source or "unknown file"
        name = str(named).removeprefix("file:")
        return f"{name}: media does not decode: {error.strerror or error}"
    return None
