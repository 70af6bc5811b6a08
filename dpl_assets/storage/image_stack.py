"""Image stacks (frames, crops) in HDF5: one encoded image per frame, no plugin needed.

Layout of ``{output_dir}/{key}/{video_id}.h5`` (``key`` = ``images`` or ``crops``):
- dataset ``{key}``: (N,) variable-length uint8, each entry one JPEG (default) or PNG file;
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

import cv2
import h5py
import numpy as np

from dpl_assets.storage.atomic import atomic_path

IMAGE_FORMATS = ("jpeg", "png")
_GROW_BY = 256


def encode_image(rgb: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) or grey (H, W) -> standalone JPEG (4:2:0, baseline) or PNG bytes."""
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    if image_format == "jpeg":
        ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif image_format == "png":
        ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {image_format!r}")
    if not ok:
        raise ValueError(f"could not encode a {rgb.shape} image as {image_format}")
    return data.tobytes()


def nominal_fps(times: np.ndarray) -> float:
    """Nominal rate of frames at ``times`` (N,) seconds: the inverse of the median positive
    frame interval (0.0 with fewer than two distinct times)."""
    steps = np.diff(np.asarray(times, np.float64))
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if steps.size else 0.0


def decode_image(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3)."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("not a decodable JPEG/PNG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageStackWriter:
    """Append frames to a new image stack; use as a context manager.

    ``with ImageStackWriter(path, "images") as stack: stack.append(rgb, time_s)``
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
        self._count = 0
        self._size: tuple[int, int] | None = None  # (height, width)
        self.attrs: dict[str, Any] = {}  # extra file attributes, written on success

    def __enter__(self) -> ImageStackWriter:
        temp = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(h5py.File(temp, "w"))
        self._images = self._file.create_dataset(
            self.key, shape=(0,), maxshape=(None,), chunks=(64,),
            dtype=h5py.vlen_dtype(np.uint8),
        )  # fmt: skip
        self._times = self._file.create_dataset(
            "timestamps", shape=(0,), maxshape=(None,), chunks=(1024,), dtype=np.float64
        )
        return self

    def append(self, rgb: np.ndarray, time_s: float) -> None:
        """Add one RGB uint8 (H, W, 3) frame; every frame must have the first one's size."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
        if self._size is None:
            self._size = (rgb.shape[0], rgb.shape[1])
        elif rgb.shape[:2] != self._size:
            raise ValueError(f"frame {self._count} is {rgb.shape[:2]}, the stack is {self._size}")
        if self._count == self._images.shape[0]:
            self._images.resize((self._count + _GROW_BY,))
            self._times.resize((self._count + _GROW_BY,))
        encoded = encode_image(rgb, self.image_format, self.quality)
        self._images[self._count] = np.frombuffer(encoded, dtype=np.uint8)
        self._times[self._count] = time_s
        self._count += 1

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if exc_info[0] is None:
                self._finish()
        finally:
            # Closing the ExitStack renames the temp file into place only without an error.
            self._stack.__exit__(*exc_info)

    def _finish(self) -> None:
        assert self._file is not None
        self._images.resize((self._count,))
        self._times.resize((self._count,))
        height, width = self._size or (0, 0)
        times = self._times[:]
        if self.fps is None:
            self.fps = nominal_fps(times)
        self._file.attrs.update(
            {
                "format": self.image_format,
                "quality": self.quality,
                "width": width,
                "height": height,
                "fps": self.fps or 0.0,
                "count": self._count,
                **self.attrs,
            }
        )


class ImageStack:
    """Read an image stack: ``len``, ``timestamps``, ``attrs``, ``stack[i]`` -> RGB, iteration."""

    def __init__(self, path: Path, key: str | None = None):
        self.path = Path(path)
        self._file = h5py.File(self.path, "r")
        self.key = key or self.path.parent.name
        self._images = self._file[self.key]
        self.timestamps: np.ndarray = self._file["timestamps"][:]
        self.attrs = dict(self._file.attrs)

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def encoded(self, index: int) -> bytes:
        return self._images[index].tobytes()

    def __getitem__(self, index: int) -> np.ndarray:
        return decode_image(self._images[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
