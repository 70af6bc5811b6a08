"""Image sequences inside HDF5 datasets, in two layouts, written streaming and read back.

``vlen`` (the layout of :mod:`dpl_assets.storage.image_stack`): a (N,) dataset of
variable-length uint8 entries, each one standalone JPEG or PNG file. Needs no plugin to
read; any decoder opens an entry's bytes.

``filter32019`` (compatible with the original tool's files): a (N, H, W, 3) uint8 dataset
((N, H, W) for grey), chunks (1, H, W, 3) (one frame per chunk), resizable first axis,
with HDF5 filter 32019 (the jpegHDF5 plugin, https://github.com/CARS-UChicago/jpegHDF5)
registered with ``compression_opts = (quality, width, height, 1 if RGB else 0)``. That
plugin stores each chunk as one standalone baseline JPEG of the frame, so we write the
JPEG bytes ourselves with ``write_direct_chunk`` (no plugin needed to write) and read them
back with ``read_direct_chunk`` + a JPEG decoder (no plugin needed to read). Readers that
do have the plugin on ``HDF5_PLUGIN_PATH`` see a plain (N, H, W, 3) uint8 array.

Both layouts take either pixel arrays (encoded here) or already-encoded JPEG/PNG bytes
(stored as given: packing an existing JPEG stack at the same quality never re-encodes).
Encoded bytes are checked from their header (format, size, channels); a filter32019
chunk is also decoded first (:func:`check_jpeg_chunk`), because the plugin calls
``exit()`` on a chunk its decoder rejects and never checks sizes: bytes that do not decode
completely, or decode to another size or colour space than the dataset's, are refused
with a ValueError naming the dataset and frame, before anything is written.

The filter is stored with the plugin's name (:data:`JPEG_FILTER_NAME`), as files the
plugin writes have it: HDF5 records a filter's name only from a registered filter, so
when the plugin is not loaded in this process a stand-in with that id and name is
registered (:func:`ensure_named_jpeg_filter`) before the dataset is created. The stand-in
never encodes or decodes (it reports failure, as an absent plugin does: plain writes store
raw pixels under the optional filter, plain reads of JPEG chunks fail); this module reads
and writes chunks directly, so it never needs the filter.

Every image dataset carries the attributes ``layout``, ``format`` ("jpeg" | "png"),
``quality`` (the JPEG quality the entries were encoded at), ``width``, ``height`` (pixels)
and ``channels`` (3 = RGB, 1 = grey).
"""

from __future__ import annotations

import ctypes
import io
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import h5py
import numpy as np
from h5py import h5z
from PIL import Image, UnidentifiedImageError

from dpl_assets.storage.image_stack import IMAGE_FORMATS, decode_image, encode_image

LAYOUTS = ("vlen", "filter32019")
JPEG_FILTER_ID = 32019
"""The HDF5 filter id registered for the jpegHDF5 plugin."""
JPEG_FILTER_NAME = "jpeg; see https://github.com/CARS-UChicago/jpegHDF5"
"""The name the jpegHDF5 plugin registers its filter with (``jpeg_h5filter.c``)."""

_GROW_BY = 256  # entries added per resize: resizing per frame costs an HDF5 metadata write
_READ_BLOCK = 64  # vlen entries fetched per read while streaming (bounded memory)
_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# PNG colour types we accept, by channel count: grey (0) and RGB (2).
_PNG_COLOUR = {1: 0, 3: 2}

EncodedImage = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says: format, size (pixels), channels, bit depth.

    ``png_colour`` is the PNG colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha,
    6 RGBA); None for JPEG.
    """

    format: str
    height: int
    width: int
    channels: int
    bits: int
    png_colour: int | None = None


def image_header(data: EncodedImage | np.ndarray) -> ImageHeader:
    """Read a JPEG or PNG header without decoding the pixels (Pillow's ``Image.open`` reads
    the header only): format, size (pixels), channels, bits per sample.

    Raises ValueError for anything that is neither, or a header Pillow cannot read
    (truncated, corrupt, or a JPEG of other than 8 bits): ``JPEG bytes the decoder rejects
    (Truncated File Read)``.
    """
    raw = _as_bytes(data)
    if raw.startswith(_PNG_MAGIC):
        image_format = "png"
    elif raw.startswith(_JPEG_MAGIC):
        image_format = "jpeg"
    else:
        raise ValueError("not a JPEG or PNG image (unknown magic bytes)")
    try:
        with Image.open(io.BytesIO(raw), formats=[image_format.upper()]) as image:
            width, height = image.size
            bands = len(image.getbands())
    except UnidentifiedImageError:  # its message names a BytesIO object, not the problem
        raise ValueError(f"{image_format.upper()} bytes the decoder rejects (bad header)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{image_format.upper()} bytes the decoder rejects ({error})") from None
    if image_format == "jpeg":  # Pillow opens 8-bit JPEGs only: grey (L), RGB or CMYK
        return ImageHeader("jpeg", height, width, bands, 8)
    # Pillow opens a 16-bit RGB PNG as mode RGB, a palette one as P (1 band): bit depth and
    # colour type are IHDR's bytes 24 and 25 (fixed in every PNG, just read by Pillow).
    bits, colour = raw[24], raw[25]
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}[colour]
    return ImageHeader("png", height, width, channels, bits, colour)


def _as_bytes(data: EncodedImage | np.ndarray) -> bytes:
    if isinstance(data, np.ndarray):
        return data.tobytes()
    return bytes(data)


def _is_encoded(item: Any) -> bool:
    """Bytes-like objects and 1-D uint8 arrays (what h5py returns for a vlen entry)."""
    if isinstance(item, bytes | bytearray | memoryview):
        return True
    return isinstance(item, np.ndarray) and item.ndim == 1 and item.dtype == np.uint8


def encode_frame(frame: np.ndarray, image_format: str = "jpeg", quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) or grey uint8 (H, W) -> standalone baseline JPEG (4:2:0) or PNG."""
    return encode_image(frame, image_format, quality)


def decode_frame(data: EncodedImage | np.ndarray, channels: int = 3) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3) (``channels=3``) or grey uint8 (H, W) (1)."""
    if channels == 3:
        return decode_image(data if isinstance(data, np.ndarray) else bytes(data))
    buffer = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    grey = cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError("not a decodable JPEG/PNG image")
    return grey


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
        self._dset: h5py.Dataset | None = None
        self._count = 0

    @property
    def count(self) -> int:
        """Frames appended so far."""
        return self._count

    def append(self, frame: np.ndarray | EncodedImage) -> None:
        """Add one frame: pixels (H, W, 3) / (H, W) uint8, or encoded JPEG/PNG bytes."""
        if _is_encoded(frame):
            data = _as_bytes(frame)
            self._ensure_dataset(self._check_encoded(data))
        else:
            pixels = np.asarray(frame)
            if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
                raise ValueError(
                    f"frames must be uint8 (H, W, 3) or (H, W), got {pixels.dtype} {pixels.shape}"
                )
            _check_frame_shape(pixels.shape)
            self._ensure_dataset(pixels.shape)
            data = encode_frame(pixels, self.image_format, self.quality)
        self._write(data)

    def finish(self) -> h5py.Dataset:
        """Trim the dataset to the frames appended and return it."""
        if self._dset is None:
            if self.frame_shape is None and self.layout == "filter32019":
                raise ValueError(
                    f"{self.name}: no frames and no frame_shape: cannot size a filter32019 dataset"
                )
            self._create(self.frame_shape or (0, 0, 3))
        assert self._dset is not None
        self._dset.resize(self._count, axis=0)
        return self._dset

    def __enter__(self) -> ImageDatasetWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is None:
            self.finish()

    def _check_encoded(self, data: bytes) -> tuple[int, ...]:
        try:
            header = image_header(data)
        except ValueError as error:
            raise ValueError(f"{self.name} frame {self._count}: {error}") from None
        if header.format != self.image_format:
            raise ValueError(
                f"{self.name} frame {self._count}: {header.format} bytes in a "
                f"{self.image_format} dataset"
            )
        if header.bits != 8 or header.channels not in (1, 3):
            raise ValueError(
                f"{self.name} frame {self._count}: only 8-bit grey or RGB images are stored, "
                f"got {header.bits}-bit with {header.channels} channels"
            )
        if header.png_colour is not None and header.png_colour != _PNG_COLOUR[header.channels]:
            # Palette PNGs decode to RGB too, but we keep entries to what we write ourselves.
            raise ValueError(
                f"{self.name} frame {self._count}: PNG colour type {header.png_colour}"
            )
        if header.channels == 3:
            return (header.height, header.width, 3)
        return (header.height, header.width)

    def _check_chunk(self, data: bytes) -> None:
        """A filter32019 chunk must decode as the plugin will decode it (see module doc)."""
        assert self.frame_shape is not None
        try:
            check_jpeg_chunk(data, self.frame_shape)
        except ValueError as error:
            raise ValueError(f"{self.name} frame {self._count}: {error}") from None

    def _ensure_dataset(self, shape: tuple[int, ...]) -> None:
        if self.frame_shape is None:
            self.frame_shape = tuple(shape)
        elif tuple(shape) != self.frame_shape:
            raise ValueError(
                f"{self.name} frame {self._count} is {tuple(shape)}, the dataset is "
                f"{self.frame_shape}"
            )
        if self._dset is None:
            self._create(self.frame_shape)

    def _create(self, shape: tuple[int, ...]) -> None:
        height, width = shape[0], shape[1]
        channels = shape[2] if len(shape) == 3 else 1
        if self.layout == "vlen":
            self._dset = self.group.create_dataset(
                self.name, shape=(0,), maxshape=(None,), chunks=(64,),
                dtype=h5py.vlen_dtype(np.uint8),
            )  # fmt: skip
        else:
            # The plugin's convention: one whole frame per chunk, opts (q, W, H, RGB?).
            # allow_unknown_filter: the plugin is not needed, we write the chunks ourselves.
            ensure_named_jpeg_filter()  # so the file records the filter's name
            self._dset = self.group.create_dataset(
                self.name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                chunks=(1, *shape),
                dtype=np.uint8,
                compression=JPEG_FILTER_ID,
                compression_opts=(self.quality, width, height, 1 if channels == 3 else 0),
                allow_unknown_filter=True,
            )
        self._dset.attrs.update(
            {
                "layout": self.layout,
                "format": self.image_format,
                "quality": self.quality,
                "width": width,
                "height": height,
                "channels": channels,
            }
        )

    def _write(self, data: bytes) -> None:
        dset = self._dset
        assert dset is not None
        if self._count == dset.shape[0]:
            dset.resize(self._count + _GROW_BY, axis=0)
        if self.layout == "vlen":
            dset[self._count] = np.frombuffer(data, dtype=np.uint8)
        else:
            self._check_chunk(data)
            offset = (self._count,) + (0,) * (dset.ndim - 1)
            dset.id.write_direct_chunk(offset, data)
        self._count += 1


def check_jpeg_chunk(data: bytes, frame_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``data`` is one JPEG that decodes completely (no truncation,
    no decoder error) to ``frame_shape``: (H, W, 3) colour (RGB) or (H, W) greyscale."""
    want_mode = "RGB" if len(frame_shape) == 3 else "L"
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            mode, size = image.mode, image.size
            image.load()  # the whole scan: truncated or corrupt data raises here
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"JPEG bytes the decoder rejects ({error})") from None
    if mode != want_mode:
        raise ValueError(f"JPEG decodes to colour space {mode}, the dataset stores {want_mode}")
    if (size[1], size[0]) != tuple(frame_shape[:2]):
        raise ValueError(
            f"JPEG decodes to {size[1]}x{size[0]} (HxW), the dataset is "
            f"{frame_shape[0]}x{frame_shape[1]}"
        )


_FILTER_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_size_t,  # bytes of output, 0 = failure
    ctypes.c_uint,  # flags
    ctypes.c_size_t,  # cd_nelmts
    ctypes.POINTER(ctypes.c_uint),  # cd_values
    ctypes.c_size_t,  # nbytes
    ctypes.POINTER(ctypes.c_size_t),  # buf_size
    ctypes.POINTER(ctypes.c_void_p),  # buf
)


class _H5ZClass2(ctypes.Structure):
    """HDF5's ``H5Z_class2_t`` (H5Zpublic.h)."""

    _fields_ = [
        ("version", ctypes.c_int),
        ("id", ctypes.c_int),
        ("encoder_present", ctypes.c_uint),
        ("decoder_present", ctypes.c_uint),
        ("name", ctypes.c_char_p),
        ("can_apply", ctypes.c_void_p),
        ("set_local", ctypes.c_void_p),
        ("filter", _FILTER_FUNC),
    ]


def _refuse(*_args: Any) -> int:
    return 0  # HDF5: the filter failed (an optional filter is then skipped on write)


_STAND_IN: list[Any] = []  # keeps the class and its callback alive for the process
_STAND_IN_LOCK = threading.Lock()


def ensure_named_jpeg_filter() -> None:
    """Make filter 32019 known to HDF5 under the plugin's name, so datasets created with it
    record :data:`JPEG_FILTER_NAME`: the plugin itself when HDF5 can load it, else a
    stand-in that never filters (registered once per process)."""
    with _STAND_IN_LOCK:
        if h5z.filter_avail(JPEG_FILTER_ID):  # registered, or the plugin loads from its path
            return
        callback = _FILTER_FUNC(_refuse)
        cls = _H5ZClass2(
            1, JPEG_FILTER_ID, 1, 1, JPEG_FILTER_NAME.encode(), None, None, callback
        )  # H5Z_CLASS_T_VERS = 1
        _STAND_IN.extend([cls, callback])
        h5z.register_filter(ctypes.addressof(cls))


def _check_frame_shape(shape: Sequence[int]) -> None:
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] != 3):
        raise ValueError(f"frames must be (H, W, 3) RGB or (H, W) grey, not {tuple(shape)}")
    if shape[0] <= 0 or shape[1] <= 0:
        raise ValueError(f"frames must not be empty, got {tuple(shape)}")


class ImageDatasetReader:
    """Random access to an image dataset of either layout (see :func:`open_images`).

    ``len(reader)``, ``reader[i]`` -> uint8 (H, W, 3) RGB ((H, W) for grey),
    ``reader.encoded(i)`` -> the stored JPEG/PNG bytes, ``reader.read(indices)`` ->
    (K, H, W, 3), ``reader.iter_encoded(start, stop)`` streams bytes in blocks.

    Also reads plain uint8 (N, H, W[, 3]) arrays (layout ``raw``: e.g. a filter32019 file
    decompressed by ``h5repack``), re-encoding for :meth:`encoded`.
    """

    def __init__(self, dset: h5py.Dataset):
        self.dset = dset
        self.layout = _detect_layout(dset)
        attrs = _image_attrs(dset)
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
            self._filter_bit = 0  # unused: vlen entries have no filter
        else:
            self.format = "jpeg" if self.layout == "filter32019" else "raw"
            self.height, self.width = int(dset.shape[1]), int(dset.shape[2])
            self.channels = 3 if dset.ndim == 4 else 1
            position, opts = _jpeg_filter(dset) or (0, ())
            self._filter_bit = 1 << position
            self.quality = int(attrs.get("quality", opts[0] if opts else 95))

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.channels == 3:
            return (self.height, self.width, 3)
        return (self.height, self.width)

    def __len__(self) -> int:
        return int(self.dset.shape[0])

    def _index(self, index: int) -> int:
        count = len(self)
        resolved = index + count if index < 0 else index
        if not 0 <= resolved < count:
            raise IndexError(f"frame {index} out of range for {count} frames")
        return resolved

    def encoded(self, index: int) -> bytes:
        """The stored JPEG/PNG bytes of frame ``index`` (raw frames are JPEG-encoded here)."""
        index = self._index(index)
        if self.layout == "vlen":
            return _as_bytes(self.dset[index])
        if self.layout == "filter32019":
            mask, data = self._chunk(index)
            if not mask & self._filter_bit:
                return bytes(data)
            pixels = self._raw_chunk(index, data)
        else:
            pixels = self.dset[index]
        return encode_frame(pixels, "jpeg", self.quality)

    def __getitem__(self, index: int) -> np.ndarray:
        index = self._index(index)
        if self.layout == "vlen":
            return self._decode(self.dset[index], index)
        if self.layout == "filter32019":
            mask, data = self._chunk(index)
            if mask & self._filter_bit:
                return self._raw_chunk(index, data)
            return self._decode(data, index)
        return np.asarray(self.dset[index])

    def read(self, indices: Iterable[int] | slice) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) -> uint8 (K, H, W[, 3])."""
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self)))
        wanted = [self._index(int(i)) for i in indices]
        out = np.empty((len(wanted), *self.frame_shape), dtype=np.uint8)
        contiguous = bool(wanted) and wanted == list(range(wanted[0], wanted[0] + len(wanted)))
        if contiguous and self.layout != "filter32019":
            # One HDF5 read for a run of frames (the usual training window).
            block = self.dset[wanted[0] : wanted[0] + len(wanted)]
            for row, item in enumerate(block):
                out[row] = self._decode(item, wanted[row]) if self.layout == "vlen" else item
            return out
        for row, index in enumerate(wanted):
            out[row] = self[index]
        return out

    def iter_encoded(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Stored bytes of frames ``start..stop-1``, fetched in small blocks (bounded memory)."""
        stop = len(self) if stop is None else min(stop, len(self))
        if self.layout != "vlen":
            for index in range(start, stop):
                yield self.encoded(index)
            return
        for block_start in range(start, stop, _READ_BLOCK):
            for item in self.dset[block_start : min(block_start + _READ_BLOCK, stop)]:
                yield _as_bytes(item)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.layout != "vlen":
            for index in range(len(self)):
                yield self[index]
            return
        for index, data in enumerate(self.iter_encoded()):
            yield self._decode(data, index)

    def _chunk(self, index: int) -> tuple[int, bytes]:
        """(filter mask, stored bytes) of frame ``index``'s chunk."""
        offset = (index,) + (0,) * (self.dset.ndim - 1)
        try:
            mask, data = self.dset.id.read_direct_chunk(offset)
            data = bytes(data)
            # With h5py 3.16 on HDF5 2.0, read_direct_chunk reports mask 0 even for chunks
            # stored unfiltered; get_chunk_info_by_coord reports it right. Ask it only
            # when the bytes could be raw pixels (not JPEG, or exactly a frame's size).
            raw_size = self.height * self.width * self.channels
            if not data.startswith(_JPEG_MAGIC) or len(data) == raw_size:
                mask = self.dset.id.get_chunk_info_by_coord(offset).filter_mask
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"frame {index} of {self.dset.name} has no stored chunk") from error
        return int(mask), data

    def _raw_chunk(self, index: int, data: bytes) -> np.ndarray:
        # Filter 32019 is registered optional: a writer without the plugin stores the chunk
        # unfiltered and sets its bit in the chunk's filter mask. Those bytes are raw pixels.
        pixels = np.frombuffer(data, dtype=np.uint8)
        if pixels.size != int(np.prod(self.frame_shape)):
            raise ValueError(f"frame {index}: unfiltered chunk of {pixels.size} bytes")
        return pixels.reshape(self.frame_shape).copy()

    def _decode(self, data: bytes | np.ndarray, index: int) -> np.ndarray:
        frame = decode_frame(data, self.channels)
        if frame.shape != self.frame_shape:
            raise ValueError(
                f"frame {index} of {self.dset.name} decodes to {frame.shape}, "
                f"not {self.frame_shape}"
            )
        return frame


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
    if dset.ndim == 1 and h5py.check_vlen_dtype(dset.dtype) == np.dtype(np.uint8):
        return "vlen"
    frames = dset.dtype == np.uint8 and (dset.ndim == 3 or (dset.ndim == 4 and dset.shape[3] == 3))
    if frames and _jpeg_filter(dset) is not None:
        return "filter32019"
    if frames:
        return "raw"
    raise ValueError(
        f"{dset.name} ({dset.dtype}, {dset.shape}) is not an image dataset: neither vlen "
        f"uint8 entries nor uint8 (N, H, W[, 3]) frames"
    )


def _jpeg_filter(dset: h5py.Dataset) -> tuple[int, tuple[int, ...]] | None:
    """(pipeline position, cd_values) of filter 32019 on ``dset``, or None."""
    plist = dset.id.get_create_plist()
    for position in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(position)
        if code == JPEG_FILTER_ID:
            return position, tuple(int(v) for v in values)
    return None


def _image_attrs(dset: h5py.Dataset) -> dict[str, Any]:
    """The dataset's own attributes, else its parent group's (image-stack files keep
    ``format``/``quality``/``width``/``height`` on the file)."""
    if "format" in dset.attrs:
        return dict(dset.attrs)
    return dict(dset.parent.attrs)
