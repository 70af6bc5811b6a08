"""The ``vlen`` image layout: its one writer and one reader.

A (N,) HDF5 dataset of variable-length uint8 entries, each one standalone JPEG or PNG file
(:mod:`dpl_assets.storage.image_codec`), chunks of 64 entries, first axis resizable. Needs
no plugin: any HDF5 reader gets an entry's bytes back (``h5py``: ``dset[i].tobytes()``)
and any image decoder opens them. Image stacks (:mod:`dpl_assets.storage.image_stack`) and
training files (:mod:`dpl_assets.packing.layouts`) both store images this way, through
:class:`VlenImageWriter` and :class:`VlenImageReader`; attributes are their callers'.
"""

from __future__ import annotations

from collections.abc import Iterator

import h5py
import numpy as np

from dpl_assets.storage.disk_room import ensure_room_in
from dpl_assets.storage.image_codec import EncodedImage, decode_image, decode_to_shape

VLEN_CHUNK = 64  # entries per HDF5 chunk, and per write: h5py costs ~0.2 ms per call
GROW_BY = 256  # entries added per resize (Filter32019Writer): per frame costs a metadata write
READ_BLOCK = 64  # entries fetched per read while streaming (bounded memory)


def is_vlen_images(dset: h5py.Dataset) -> bool:
    """True when ``dset`` is a (N,) dataset of variable-length uint8 entries."""
    return dset.ndim == 1 and h5py.check_vlen_dtype(dset.dtype) == np.dtype(np.uint8)


class VlenImageWriter:
    """Create ``group[name]`` as an empty vlen image dataset and append encoded images.

    ``append`` takes one encoded JPEG/PNG (bytes, or a 1-D uint8 array), stored as given:
    nothing is checked or encoded here. Entries are written a chunk (64) at a time, the
    dataset growing by as many; :meth:`finish` writes the rest and must be called before
    the dataset is read.
    """

    def __init__(self, group: h5py.Group, name: str):
        self.dataset: h5py.Dataset = group.create_dataset(
            name, shape=(0,), maxshape=(None,), chunks=(VLEN_CHUNK,),
            dtype=h5py.vlen_dtype(np.uint8),
        )  # fmt: skip
        self._count = 0
        self._pending: list[np.ndarray] = []  # appended, not written yet (< one chunk)

    @property
    def count(self) -> int:
        """Entries appended so far."""
        return self._count

    def append(self, data: EncodedImage | np.ndarray) -> None:
        """Store one encoded image as the next entry."""
        entry = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        self._pending.append(entry)
        self._count += 1
        if len(self._pending) == VLEN_CHUNK:
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        # HDF5 does not survive a full disk (dpl_assets.storage.disk_room): refuse first.
        ensure_room_in(self.dataset.file, sum(entry.size for entry in self._pending))
        self.dataset.resize((self._count,))  # one resize per block written
        first = self._count - len(self._pending)
        # h5py turns entries of one length into a 2-D block whatever container holds them,
        # and writes a 2-D uint8 block row by row as vlen entries: give it that, or else an
        # object array (entries of several lengths).
        if len({entry.size for entry in self._pending}) == 1:
            block: np.ndarray = np.stack(self._pending)
        else:
            block = np.empty(len(self._pending), dtype=object)
            for index, entry in enumerate(self._pending):
                block[index] = entry
        self.dataset[first : self._count] = block
        self._pending = []

    def finish(self) -> h5py.Dataset:
        """Write what is pending and return the dataset (all entries appended)."""
        self._write_pending()
        return self.dataset


class VlenImageReader:
    """Read a vlen image dataset: ``len``, ``reader[i]`` -> decoded frame,
    :meth:`encoded`, streaming :meth:`frames` / :meth:`iter_encoded`, iteration.

    ``frame_shape``: (H, W, 3) frames decode to RGB uint8, (H, W) to grey uint8, and a
    frame that decodes to another shape raises ValueError naming it. None: frames decode
    to RGB uint8 (H, W, 3) of whatever size they are. Indices are h5py's (no range check
    here); a frame that does not decode raises ValueError.
    """

    def __init__(self, dset: h5py.Dataset, frame_shape: tuple[int, ...] | None = None):
        self.dset = dset
        self.frame_shape = frame_shape

    def __len__(self) -> int:
        return int(self.dset.shape[0])

    def encoded(self, index: int) -> bytes:
        """The stored JPEG/PNG bytes of entry ``index``."""
        return self.dset[index].tobytes()

    def __getitem__(self, index: int) -> np.ndarray:
        return self._decode(self.dset[index], index)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Decoded frames ``start..stop-1``, read in blocks of 64 entries."""
        index = start
        for entry in self._entries(start, stop):
            yield self._decode(entry, index)
            index += 1

    def iter_encoded(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Stored bytes of entries ``start..stop-1``, read in blocks of 64 entries."""
        for entry in self._entries(start, stop):
            yield entry.tobytes()

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.frames()

    def _entries(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        stop = len(self) if stop is None else min(stop, len(self))
        for block_start in range(start, stop, READ_BLOCK):
            yield from self.dset[block_start : min(block_start + READ_BLOCK, stop)]

    def _decode(self, entry: np.ndarray, index: int) -> np.ndarray:
        if self.frame_shape is None:
            return decode_image(entry)
        return decode_to_shape(entry, self.frame_shape, index, self.dset)
