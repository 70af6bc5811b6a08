"""Typed handles of stored artefacts too large to load whole: what a node gets for an image
stack input (frames are streamed from the file, never read all at once)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dpl_assets.media import timeline
from dpl_assets.storage.image_stack import ImageStack


@dataclass(frozen=True)
class ImageStackRef(os.PathLike):
    """One video's image stack of datatype ``key`` at ``path`` (``images``, ``crops``, renders).

    ``len(ref)`` frames, ``ref.timestamps`` float64 (N,) seconds on the container clock,
    ``ref.frame_times()`` by the one frame-time rule, ``ref.attrs`` (width, height, fps...),
    and ``with ref.open() as stack:`` to stream RGB uint8 (H, W, 3) frames. It is also a
    path (``os.PathLike``), for code that takes the file. Reading raises ``OSError`` or
    ``KeyError`` on a damaged file.
    """

    path: Path
    key: str

    def __fspath__(self) -> str:
        return str(self.path)

    def open(self) -> ImageStack:
        """The stack opened for reading (a context manager; close it when done)."""
        return ImageStack(self.path, self.key)

    @cached_property
    def _header(self) -> tuple[int, np.ndarray, dict[str, Any]]:
        with h5py.File(self.path, "r") as file:
            return int(file[self.key].shape[0]), file["timestamps"][:], dict(file.attrs)

    def __len__(self) -> int:
        return self._header[0]

    @property
    def timestamps(self) -> np.ndarray:
        """float64 (N,) presentation times in seconds, as stored."""
        return np.asarray(self._header[1], np.float64)

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's attributes as stored (``width``, ``height`` in pixels, ``fps``...)."""
        return self._header[2]

    def frame_times(self, fps: float | None = None) -> np.ndarray:
        """float64 (N,) seconds of its frames by :func:`~dpl_assets.media.timeline.frame_times_for`
        (``i / fps`` when a rate is given, else the stored timestamps)."""
        return timeline.frame_times_for(self.timestamps, len(self), fps)
