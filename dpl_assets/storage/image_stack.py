"""Image stacks (frames, crops, renders) in HDF5: one encoded image per frame, no plugin needed.

Layout of ``{output_dir}/{key}/{video_id}.h5`` (``key`` = ``images``, ``crops``, ...):
- dataset ``{key}``: (N,) variable-length uint8, each entry one JPEG (default) or PNG file
  (the ``vlen`` layout of :mod:`dpl_assets.storage.vlen_images`);
- dataset ``timestamps``: (N,) float64, seconds from the start of the container;
- attributes: ``format`` ("jpeg" | "png"), ``quality`` (JPEG quality), ``width``,
  ``height`` (pixels, every image has this size), ``fps`` (the nominal rate: the target
  rate when resampled, else the median frame interval's inverse), ``count``.

Any HDF5 reader can get the bytes back (``h5py``: ``f["images"][i].tobytes()``) and any
image decoder can open them. Writing streams frame by frame and is atomic: the file appears
under its final name only once complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dpl_assets.storage.atomic import atomic_path
from dpl_assets.storage.disk_room import ensure_room
from dpl_assets.storage.image_codec import IMAGE_FORMATS, decode_image, encode_image
from dpl_assets.storage.vlen_images import VlenImageReader, VlenImageWriter

__all__ = [
    "IMAGE_FORMATS",
    "ImageStack",
    "ImageStackWriter",
    "decode_image",
    "encode_image",
    "nominal_fps",
]

TIMESTAMPS_KEY = "timestamps"


def nominal_fps(times: np.ndarray) -> float:
    """Nominal rate of frames at ``times`` (N,) seconds: the inverse of the median positive
    frame interval (0.0 with fewer than two distinct times)."""
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else 0.0


class ImageStackWriter:
    """Append frames to a new image stack at ``path``; use as a context manager.

    ``with ImageStackWriter(path, "images") as stack: stack.append(rgb, time_s)``

    ``image_format``: "jpeg" | "png" (else ValueError); ``quality``: JPEG quality 1..100;
    ``fps``: the nominal rate to record (None: :func:`nominal_fps` of the timestamps).
    ``attrs``: extra file attributes, written on success. The file appears under ``path``
    only when the ``with`` block ends without an error.
    """

    def __init__(
        self,
        path: Path,
        key: str,
        image_format: str = "jpeg",
        quality: int = 95,
        fps: float | None = None,
    ):
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {image_format!r}")
        self.path, self.key = Path(path), key
        self.image_format, self.quality, self.fps = image_format, quality, fps
        self._stack = contextlib.ExitStack()
        self._file: h5py.File | None = None
        self._size: tuple[int, int] | None = None  # (height, width)
        self._times: list[float] = []  # written at the end: 8 bytes a frame (3 MB per 100k)
        self.attrs: dict[str, Any] = {}  # extra file attributes, written on success

    def __enter__(self) -> ImageStackWriter:
        ensure_room(self.path)  # frames are checked per block as they are written
        temp = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(h5py.File(temp, "w"))
        self._images = VlenImageWriter(self._file, self.key)
        return self

    def append(self, rgb: np.ndarray, time_s: float) -> None:
        """Add one RGB uint8 (H, W, 3) frame at ``time_s`` seconds; every frame must have
        the first one's size (else ValueError)."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        count = self._images.count
        if self._size is None:
            self._size = (rgb.shape[0], rgb.shape[1])
        elif rgb.shape[:2] != self._size:
            raise ValueError(f"frame {count} is {rgb.shape[:2]}, the stack is {self._size}")
        self._images.append(encode_image(rgb, self.image_format, self.quality))
        self._times.append(float(time_s))

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                self._finish()
        finally:
            # Closing the ExitStack renames the temp file into place only without an error.
            self._stack.__exit__(*exc_info)

    def _finish(self) -> None:
        assert self._file is not None
        count = self._images.count
        self._images.finish()
        times = np.asarray(self._times, np.float64)
        self._file.create_dataset(TIMESTAMPS_KEY, data=times, maxshape=(None,), chunks=(1024,))
        height, width = self._size or (0, 0)
        if self.fps is None:
            self.fps = nominal_fps(times)
        self._file.attrs.update(
            {
                "format": self.image_format,
                "quality": self.quality,
                "width": width,
                "height": height,
                "fps": self.fps or 0.0,
                "count": count,
                **self.attrs,
            }
        )


class ImageStack:
    """Read an image stack: ``len``, ``timestamps`` (N,) float64 seconds, ``attrs`` (the
    file's), ``stack[i]`` -> RGB uint8 (H, W, 3), ``stack.encoded(i)`` -> the stored
    JPEG/PNG bytes, iteration (decoded RGB frames, read in small blocks).

    ``key``: the image dataset's name (None: the parent directory's name, as the store lays
    stacks out). Raises KeyError when the file has no such dataset; a frame that does not
    decode raises ValueError.
    """

    def __init__(self, path: Path, key: str | None = None):
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        self.key = key or self.path.parent.name
        self._images = VlenImageReader(self._file[self.key])
        self.timestamps: np.ndarray = self._file[TIMESTAMPS_KEY][:]
        self.attrs = dict(self._file.attrs)

    def __len__(self) -> int:
        return len(self._images)

    def encoded(self, index: int) -> bytes:
        return self._images.encoded(index)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._images[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._images.frames()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
