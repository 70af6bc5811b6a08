"""The ``filter32019`` image layout (the original tool's): its one writer and one reader.

A (N, H, W, 3) uint8 dataset ((N, H, W) for grey), chunks (1, H, W, 3) (one frame per
chunk), resizable first axis, with HDF5 filter 32019 (the jpegHDF5 plugin,
https://github.com/CARS-UChicago/jpegHDF5) registered with
``compression_opts = (quality, width, height, 1 if RGB else 0)``. That plugin stores each
chunk as one standalone baseline JPEG of the frame, so we write the JPEG bytes ourselves
with ``write_direct_chunk`` (no plugin needed to write) and read them back with
``read_direct_chunk`` + a JPEG decoder (no plugin needed to read). Readers that do have
the plugin on ``HDF5_PLUGIN_PATH`` see a plain (N, H, W, 3) uint8 array.

A chunk is decoded before it is written (:func:`check_jpeg_chunk`), because the plugin
calls ``exit()`` on a chunk its decoder rejects and never checks sizes: bytes that do not
decode completely, or decode to another size or colour space than the dataset's, are
refused with a ValueError naming the dataset and frame, before anything is written.

The filter is stored with the plugin's name (:data:`JPEG_FILTER_NAME`), as files the
plugin writes have it: HDF5 records a filter's name only from a registered filter, so
when the plugin is not loaded in this process a stand-in with that id and name is
registered (:func:`ensure_named_jpeg_filter`) before the dataset is created. The stand-in
never encodes or decodes (it reports failure, as an absent plugin does: plain writes store
raw pixels under the optional filter, plain reads of JPEG chunks fail); this module reads
and writes chunks directly, so it never needs the filter.

The same frames stored as plain uint8 (N, H, W[, 3]) (layout ``raw``: e.g. a filter32019
file decompressed by ``h5repack``) are read by :class:`RawImageReader`.
"""

from __future__ import annotations

import ctypes
import io
import threading
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
from h5py import h5z
from PIL import Image

from dpl_assets.storage.disk_room import ensure_room_in
from dpl_assets.storage.image_codec import JPEG_MAGIC, decode_to_shape, encode_image
from dpl_assets.storage.vlen_images import GROW_BY, READ_BLOCK

JPEG_FILTER_ID = 32019
"""The HDF5 filter id registered for the jpegHDF5 plugin."""
JPEG_FILTER_NAME = "jpeg; see https://github.com/CARS-UChicago/jpegHDF5"
"""The name the jpegHDF5 plugin registers its filter with (``jpeg_h5filter.c``)."""


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


def jpeg_filter(dset: h5py.Dataset) -> tuple[int, tuple[int, ...]] | None:
    """(pipeline position, cd_values) of filter 32019 on ``dset``, or None."""
    plist = dset.id.get_create_plist()
    for position in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(position)
        if code == JPEG_FILTER_ID:
            return position, tuple(int(v) for v in values)
    return None


class Filter32019Writer:
    """Create ``group[name]`` for frames of ``frame_shape`` ((H, W, 3) RGB or (H, W) grey)
    at JPEG ``quality`` and append one baseline JPEG per frame as its chunk.

    :meth:`append` checks each JPEG first (:func:`check_jpeg_chunk`; ValueError naming
    ``name`` and the frame); :meth:`finish` trims the preallocated tail.
    """

    def __init__(self, group: h5py.Group, name: str, frame_shape: tuple[int, ...], quality: int):
        height, width = frame_shape[0], frame_shape[1]
        rgb = len(frame_shape) == 3
        # The plugin's convention: one whole frame per chunk, opts (q, W, H, RGB?).
        # allow_unknown_filter: the plugin is not needed, we write the chunks ourselves.
        ensure_named_jpeg_filter()  # so the file records the filter's name
        self.dataset: h5py.Dataset = group.create_dataset(
            name,
            shape=(0, *frame_shape),
            maxshape=(None, *frame_shape),
            chunks=(1, *frame_shape),
            dtype=np.uint8,
            compression=JPEG_FILTER_ID,
            compression_opts=(quality, width, height, 1 if rgb else 0),
            allow_unknown_filter=True,
        )
        self.name, self.frame_shape = name, tuple(frame_shape)
        self._zeros = (0,) * len(frame_shape)  # a chunk's offset: (frame, 0, 0[, 0])
        self._count = self._capacity = 0

    @property
    def count(self) -> int:
        """Frames appended so far."""
        return self._count

    def append(self, data: bytes) -> None:
        """Store one JPEG of the dataset's frame shape as the next frame's chunk."""
        dset = self.dataset
        if self._count == self._capacity:
            # HDF5 does not survive a full disk: room for the next GROW_BY frames like this
            # one is checked (dpl_assets.storage.disk_room), once per GROW_BY frames.
            ensure_room_in(dset.file, GROW_BY * len(data))
            self._capacity += GROW_BY
            dset.resize(self._capacity, axis=0)
        try:
            check_jpeg_chunk(data, self.frame_shape)
        except ValueError as error:
            raise ValueError(f"{self.name} frame {self._count}: {error}") from None
        dset.id.write_direct_chunk((self._count, *self._zeros), data)
        self._count += 1

    def finish(self) -> h5py.Dataset:
        """Trim the dataset to the frames appended and return it."""
        self.dataset.resize(self._count, axis=0)
        return self.dataset


class Filter32019Reader:
    """Read a filter32019 dataset without the plugin: ``len``, ``reader[i]`` -> uint8
    ``frame_shape`` frame, :meth:`encoded` (the chunk's JPEG), :meth:`frames`,
    :meth:`iter_encoded`. ``index`` must be in range (0..N-1).

    A chunk a writer without the plugin stored unfiltered (its filter-mask bit set) holds
    raw pixels: read as they are, JPEG-encoded at ``quality`` (None: the filter's
    ``compression_opts`` quality) for :meth:`encoded`. A frame
    without a stored chunk, or whose bytes do not decode to ``frame_shape``, raises
    ValueError.
    """

    def __init__(
        self, dset: h5py.Dataset, frame_shape: tuple[int, ...], quality: int | None = None
    ):
        self.dset, self.frame_shape = dset, frame_shape
        self._raw_size = int(np.prod(frame_shape))  # bytes of an unfiltered chunk
        self._zeros = (0,) * (dset.ndim - 1)  # a chunk's offset: (frame, 0, 0[, 0])
        position, opts = jpeg_filter(dset) or (0, ())
        self._filter_bit = 1 << position
        self.quality = int(quality if quality is not None else (opts[0] if opts else 95))

    def __len__(self) -> int:
        return int(self.dset.shape[0])

    def encoded(self, index: int) -> bytes:
        """The stored JPEG bytes of frame ``index``."""
        mask, data = self._chunk(index)
        if not mask & self._filter_bit:
            return data
        return encode_image(self._raw_chunk(index, data), "jpeg", self.quality)

    def __getitem__(self, index: int) -> np.ndarray:
        mask, data = self._chunk(index)
        if mask & self._filter_bit:
            return self._raw_chunk(index, data)
        return decode_to_shape(data, self.frame_shape, index, self.dset)

    def frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Decoded frames ``start..stop-1`` (one chunk read each)."""
        for index in range(start, stop):
            yield self[index]

    def iter_encoded(self, start: int, stop: int) -> Iterator[bytes]:
        """Stored JPEG bytes of frames ``start..stop-1``."""
        for index in range(start, stop):
            yield self.encoded(index)

    def _chunk(self, index: int) -> tuple[int, bytes]:
        """(filter mask, stored bytes) of frame ``index``'s chunk."""
        offset = (index, *self._zeros)
        try:
            mask, data = self.dset.id.read_direct_chunk(offset)
            data = bytes(data)
            # With h5py 3.16 on HDF5 2.0, read_direct_chunk reports mask 0 even for chunks
            # stored unfiltered; get_chunk_info_by_coord reports it right. Ask it only
            # when the bytes could be raw pixels (not JPEG, or exactly a frame's size).
            if not data.startswith(JPEG_MAGIC) or len(data) == self._raw_size:
                mask = self.dset.id.get_chunk_info_by_coord(offset).filter_mask
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"frame {index} of {self.dset.name} has no stored chunk") from error
        return int(mask), data

    def _raw_chunk(self, index: int, data: bytes) -> np.ndarray:
        # Filter 32019 is registered optional: a writer without the plugin stores the chunk
        # unfiltered and sets its bit in the chunk's filter mask. Those bytes are raw pixels.
        pixels = np.frombuffer(data, dtype=np.uint8)
        if pixels.size != self._raw_size:
            raise ValueError(f"frame {index}: unfiltered chunk of {pixels.size} bytes")
        return pixels.reshape(self.frame_shape).copy()


class RawImageReader:
    """Read plain uint8 (N, H, W[, 3]) frames with :class:`Filter32019Reader`'s interface;
    :meth:`encoded` JPEG-encodes the frame at ``quality``."""

    def __init__(self, dset: h5py.Dataset, quality: int):
        self.dset, self.quality = dset, quality

    def __len__(self) -> int:
        return int(self.dset.shape[0])

    def encoded(self, index: int) -> bytes:
        return encode_image(self.dset[index], "jpeg", self.quality)

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.dset[index])

    def frames(self, start: int, stop: int) -> Iterator[np.ndarray]:
        """Frames ``start..stop-1`` (each its own array), read in blocks of 64."""
        for block_start in range(start, stop, READ_BLOCK):
            for frame in self.dset[block_start : min(block_start + READ_BLOCK, stop)]:
                yield frame.copy()

    def iter_encoded(self, start: int, stop: int) -> Iterator[bytes]:
        for index in range(start, stop):
            yield self.encoded(index)


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
