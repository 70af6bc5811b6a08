"""Image sequences inside HDF5 datasets, in two layouts, written streaming and read back.

``vlen`` (:mod:`dpl_assets.storage.vlen_images`, the layout of image stacks): a (N,)
dataset of variable-length uint8 entries, each one standalone JPEG or PNG file. Needs no
plugin to read; any decoder opens an entry's bytes.

``filter32019`` (:mod:`dpl_assets.packing.filter32019`, compatible with the original
tool's files): a (N, H, W, 3) uint8 dataset ((N, H, W) for grey), one JPEG per chunk under
HDF5 filter 32019 (the jpegHDF5 plugin), written and read without the plugin.

:class:`ImageDatasetWriter` and :class:`ImageDatasetReader` put one interface on both
(and on ``raw`` uint8 frames, for reading). Both layouts take either pixel arrays
(encoded here) or already-encoded JPEG/PNG bytes (stored as given: packing an existing
JPEG stack at the same quality never re-encodes). Encoded bytes are checked from their
header (format, size, channels), and a filter32019 chunk is also decoded first: bytes
that do not fit the dataset are refused with a ValueError naming the dataset and frame,
before anything is written.

Every image dataset carries the attributes ``layout``, ``format`` ("jpeg" | "png"),
``quality`` (the JPEG quality the entries were encoded at), ``width``, ``height`` (pixels)
and ``channels`` (3 = RGB, 1 = grey).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import h5py
import numpy as np

from dpl_assets.packing.filter32019 import (
    JPEG_FILTER_ID,
    JPEG_FILTER_NAME,
    Filter32019Reader,
    Filter32019Writer,
    RawImageReader,
    check_jpeg_chunk,
    ensure_named_jpeg_filter,
    jpeg_filter,
)
from dpl_assets.storage.image_codec import (
    IMAGE_FORMATS,
    EncodedImage,
    ImageHeader,
    as_bytes,
    encode_image,
    image_header,
    is_encoded,
)
from dpl_assets.storage.vlen_images import VlenImageReader, VlenImageWriter, is_vlen_images

__all__ = [
    "IMAGE_FORMATS",
    "JPEG_FILTER_ID",
    "JPEG_FILTER_NAME",
    "LAYOUTS",
    "EncodedImage",
    "ImageDatasetReader",
    "ImageDatasetWriter",
    "ImageHeader",
    "check_jpeg_chunk",
    "ensure_named_jpeg_filter",
    "image_header",
    "image_layout",
    "open_images",
]

LAYOUTS = ("vlen", "filter32019")
# PNG colour types we accept, by channel count: grey (0) and RGB (2).
_PNG_COLOUR = {1: 0, 3: 2}


class ImageDatasetWriter:
    """Append frames to a new image dataset ``group[name]`` in either layout, streaming.

    ``append`` takes an RGB uint8 (H, W, 3) or grey uint8 (H, W) frame, which is encoded
    here, or already-encoded JPEG/PNG bytes (``bytes`` or a 1-D uint8 array), stored as
    given after a header check (format, size, channels). All frames share the first one's
    size. Only the current frame is held in memory.

    The dataset is created at the first frame (its size fixes the filter32019 shape) or at
    :meth:`finish` when ``frame_shape`` is given; call :meth:`finish` (or use the writer as
    a context manager) to trim the preallocated tail.

    Encoded bytes are trusted to be at ``quality``: the attribute records what the caller
    says, since a JPEG does not state its quality.
    """

    def __init__(
        self,
        group: h5py.Group,
        name: str,
        *,
        layout: str = "vlen",
        image_format: str = "jpeg",
        quality: int = 95,
        frame_shape: tuple[int, ...] | None = None,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, not {image_format!r}")
        if layout == "filter32019" and image_format != "jpeg":
            raise ValueError("the filter32019 layout stores JPEG only")
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, not {quality}")
        if frame_shape is not None:
            _check_frame_shape(frame_shape)
        self.group, self.name = group, name
        self.layout, self.image_format, self.quality = layout, image_format, int(quality)
        self.frame_shape = frame_shape
        self._writer: VlenImageWriter | Filter32019Writer | None = None

    @property
    def count(self) -> int:
        """Frames appended so far."""
        return 0 if self._writer is None else self._writer.count

    def append(self, frame: np.ndarray | EncodedImage) -> None:
        """Add one frame: pixels (H, W, 3) / (H, W) uint8, or encoded JPEG/PNG bytes."""
        if is_encoded(frame):
            data = as_bytes(frame)
            self._ensure_dataset(self._check_encoded(data))
        else:
            pixels = np.asarray(frame)
            if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
                raise ValueError(
                    f"frames must be uint8 (H, W, 3) or (H, W), got {pixels.dtype} {pixels.shape}"
                )
            _check_frame_shape(pixels.shape)
            self._ensure_dataset(pixels.shape)
            data = encode_image(pixels, self.image_format, self.quality)
        assert self._writer is not None
        self._writer.append(data)

    def finish(self) -> h5py.Dataset:
        """Trim the dataset to the frames appended and return it."""
        if self._writer is None:
            if self.frame_shape is None and self.layout == "filter32019":
                raise ValueError(
                    f"{self.name}: no frames and no frame_shape: cannot size a filter32019 dataset"
                )
            self._create(self.frame_shape or (0, 0, 3))
        assert self._writer is not None
        return self._writer.finish()

    def __enter__(self) -> ImageDatasetWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.finish()

    def _check_encoded(self, data: bytes) -> tuple[int, ...]:
        """The frame shape ``data``'s header gives, if this dataset may store it."""
        where = f"{self.name} frame {self.count}"
        try:
            header = image_header(data)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if header.format != self.image_format:
            raise ValueError(f"{where}: {header.format} bytes in a {self.image_format} dataset")
        if header.bits != 8 or header.channels not in (1, 3):
            raise ValueError(
                f"{where}: only 8-bit grey or RGB images are stored, "
                f"got {header.bits}-bit with {header.channels} channels"
            )
        if header.png_colour is not None and header.png_colour != _PNG_COLOUR[header.channels]:
            # Palette PNGs decode to RGB too, but we keep entries to what we write ourselves.
            raise ValueError(f"{where}: PNG colour type {header.png_colour}")
        if header.channels == 3:
            return (header.height, header.width, 3)
        return (header.height, header.width)

    def _ensure_dataset(self, shape: tuple[int, ...]) -> None:
        if self.frame_shape is None:
            self.frame_shape = tuple(shape)
        elif tuple(shape) != self.frame_shape:
            raise ValueError(
                f"{self.name} frame {self.count} is {tuple(shape)}, the dataset is "
                f"{self.frame_shape}"
            )
        if self._writer is None:
            self._create(self.frame_shape)

    def _create(self, shape: tuple[int, ...]) -> None:
        if self.layout == "vlen":
            self._writer = VlenImageWriter(self.group, self.name)
        else:
            self._writer = Filter32019Writer(self.group, self.name, shape, self.quality)
        self._writer.dataset.attrs.update(
            {
                "layout": self.layout,
                "format": self.image_format,
                "quality": self.quality,
                "width": shape[1],
                "height": shape[0],
                "channels": shape[2] if len(shape) == 3 else 1,
            }
        )


def _check_frame_shape(shape: Sequence[int]) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        raise ValueError(f"frames must be (H, W, 3) RGB or (H, W) grey, not {tuple(shape)}")
    if shape[0] <= 0 or shape[1] <= 0:
        raise ValueError(f"frames must not be empty, got {tuple(shape)}")


class _LayoutReader(Protocol):
    """What each layout's reader offers (indices already in range)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...
    def encoded(self, index: int) -> bytes: ...
    def frames(self, start: int, stop: int) -> Iterator[np.ndarray]: ...
    def iter_encoded(self, start: int, stop: int) -> Iterator[bytes]: ...


class ImageDatasetReader:
    """Random access to an image dataset of either layout (see :func:`open_images`).

    ``len(reader)``, ``reader[i]`` -> uint8 (H, W, 3) RGB ((H, W) for grey),
    ``reader.encoded(i)`` -> the stored JPEG/PNG bytes, ``reader.read(indices)`` ->
    (K, H, W, 3), ``reader.iter_encoded(start, stop)`` streams bytes in blocks. An index
    out of range raises IndexError; a frame that does not decode to the dataset's
    ``frame_shape`` raises ValueError naming it.

    Also reads plain uint8 (N, H, W[, 3]) arrays (layout ``raw``: e.g. a filter32019 file
    decompressed by ``h5repack``), re-encoding for :meth:`encoded`. Raises ValueError for
    a dataset that holds no images.
    """

    def __init__(self, dset: h5py.Dataset):
        self.dset = dset
        self.layout = _detect_layout(dset)
        attrs = _image_attrs(dset)
        self._frames: _LayoutReader
        if self.layout == "vlen":
            # Attributes first; the first entry's header fills in what they do not say
            # (image-stack files have no ``channels``).
            missing = {"format", "width", "height", "channels"} - set(attrs)
            header = _first_header(dset) if missing and dset.shape[0] else None
            self.format = str(attrs.get("format", header.format if header else "jpeg"))
            self.width = int(attrs.get("width", header.width if header else 0))
            self.height = int(attrs.get("height", header.height if header else 0))
            self.channels = int(attrs.get("channels", header.channels if header else 3))
            self.quality = int(attrs.get("quality", 0))
            self._frames = VlenImageReader(dset, self.frame_shape)
            return
        self.format = "jpeg" if self.layout == "filter32019" else "raw"
        self.height, self.width = int(dset.shape[1]), int(dset.shape[2])
        self.channels = 3 if dset.ndim == 4 else 1
        quality = attrs.get("quality")
        if self.layout == "filter32019":
            frames = Filter32019Reader(dset, self.frame_shape, quality)
            self.quality, self._frames = frames.quality, frames
        else:
            self.quality = int(95 if quality is None else quality)
            self._frames = RawImageReader(dset, self.quality)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.channels == 3:
            return (self.height, self.width, 3)
        return (self.height, self.width)

    def __len__(self) -> int:
        return int(self.dset.shape[0])

    def _index(self, index: int, count: int | None = None) -> int:
        count = len(self) if count is None else count
        resolved = index + count if index < 0 else index
        if not 0 <= resolved < count:
            raise IndexError(f"frame {index} out of range for {count} frames")
        return resolved

    def encoded(self, index: int) -> bytes:
        """The stored JPEG/PNG bytes of frame ``index`` (raw frames are JPEG-encoded here)."""
        return self._frames.encoded(self._index(index))

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[self._index(index)]

    def read(self, indices: Iterable[int] | slice) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (K, H, W[, 3])."""
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self)))
        count = len(self)
        wanted = [self._index(int(i), count) for i in indices]
        out = np.empty((len(wanted), *self.frame_shape), dtype=np.uint8)
        if wanted and wanted == list(range(wanted[0], wanted[0] + len(wanted))):
            # A run of frames (the usual training window): read in blocks, not one by one.
            for row, frame in enumerate(self._frames.frames(wanted[0], wanted[0] + len(wanted))):
                out[row] = frame
            return out
        for row, index in enumerate(wanted):
            out[row] = self._frames[index]
        return out

    def iter_encoded(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Stored bytes of frames ``start..stop-1``, fetched in small blocks (bounded memory)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return self._frames.iter_encoded(start, stop)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._frames.frames(0, len(self))


def _first_header(dset: h5py.Dataset) -> ImageHeader:
    try:
        return image_header(dset[0])
    except ValueError as error:
        raise ValueError(f"{dset.name} frame 0: {error}") from None


def open_images(dset: h5py.Dataset) -> ImageDatasetReader:
    """A reader for an image dataset, its layout detected from dtype and filters."""
    return ImageDatasetReader(dset)


def image_layout(dset: h5py.Dataset) -> str | None:
    """``"vlen"``, ``"filter32019"``, ``"raw"``, or None when ``dset`` holds no images."""
    try:
        return _detect_layout(dset)
    except ValueError:
        return None


def _detect_layout(dset: h5py.Dataset) -> str:
    if is_vlen_images(dset):
        return "vlen"
    frames = dset.dtype == np.uint8 and (dset.ndim == 3 or (dset.ndim == 4 and dset.shape[3] == 3))
    if frames and jpeg_filter(dset) is not None:
        return "filter32019"
    if frames:
        return "raw"
    raise ValueError(
        f"{dset.name} ({dset.dtype}, {dset.shape}) is not an image dataset: neither vlen "
        f"uint8 entries nor uint8 (N, H, W[, 3]) frames"
    )


def _image_attrs(dset: h5py.Dataset) -> dict[str, Any]:
    """The dataset's own attributes, else its parent group's (image-stack files keep
    ``format``/``quality``/``width``/``height`` on the file)."""
    if "format" in dset.attrs:
        return dict(dset.attrs)
    return dict(dset.parent.attrs)
