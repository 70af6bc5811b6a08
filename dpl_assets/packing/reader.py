"""Fixed-length windows of packed videos as a PyTorch dataset.

``PackedWindows(source, window=16, stride=8, keys=["crops", "wav2vec"])`` serves every
window of ``window`` consecutive frames (starting every ``stride`` frames) of every video,
from per-video pack files (:mod:`dpl_assets.packing.video_pack`) or a dataset pack folder
(:mod:`dpl_assets.packing.dataset_pack`). An item is a dict: image keys -> uint8 tensor
(T, H, W, 3) (RGB; (T, H, W) for grey), ``timestamps`` -> float64 (T,), every other key ->
float32 (T, ...), plus ``video_id`` (str) and ``start`` (first frame, int).

Segments: files packed with ``segment_ids`` (``SegmentNode``'s per-frame kept-segment
index, -1 = dropped) are served per kept segment by default (``segments=None``: when every
video has them; True requires them, False ignores them): windows start at each segment's
first frame and every ``stride`` frames after, and never leave the segment, so dropped
spans and scene cuts are never inside a window; an item then carries ``segment`` (int).

Validity: by default (``skip_invalid=True``) a window is served only when every frame in
it is valid: ``face_mask`` != 0 (a face was detected or interpolated) in files that have a
``face_mask``, and ``audio_mask`` True when a requested key holds audio values (the
datasets marked ``valid_where = "audio_mask"``: ``wav2vec``, ``volume``,
``audio_blink_feature``). ``skip_invalid=False`` serves every window. Either way an item
carries the masks that apply (``face_mask`` uint8 (T,), ``audio_mask`` bool (T,)) when
every video has them, in their stored dtype.

HDF5 files are opened lazily, per process: the dataset remembers the pid that opened its
handles and opens new ones in a forked DataLoader worker (an h5py file shared across fork
is not safe to use), so ``DataLoader(dataset, num_workers=N)`` works. The index is built
at construction from dataset shapes only, and every file is closed again.
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from dpl_assets.packing.dataset_pack import INDEX_NAME, DatasetPack
from dpl_assets.packing.layouts import ImageDatasetReader, image_layout, open_images
from dpl_assets.packing.video_pack import (
    AUDIO_MASK_KEY,
    FACE_MASK_KEY,
    MASK_KEYS,
    TIMESTAMPS_KEY,
    VALID_WHERE_ATTR,
)

_ITEM_FIELDS = ("video_id", "start")
SEGMENT_IDS_KEY = "segment_ids"  # SegmentNode's kept segment per frame (-1: dropped)


@dataclass(frozen=True)
class _Video:
    video_id: str
    path: Path  # the HDF5 file holding the video
    group: str  # its group in that file ("/" for a per-video pack)
    frame_count: int
    first: int  # global index of its first window
    starts: np.ndarray  # first frame of each of its windows, in order

    @property
    def windows(self) -> int:
        return int(self.starts.size)


class PackedWindows(Dataset):
    """Windows of ``window`` frames every ``stride`` frames (default: ``window``, no
    overlap) over every video of ``source``.

    ``source``: a dataset pack folder (one with ``index.json``), a folder of per-video
    pack files (``*.h5``), one such file, or a list of files. ``keys``: the datasets to
    return (default: every dataset all videos share). Videos with fewer than ``window``
    frames give no window. ``skip_invalid`` (default True): leave out windows with an
    invalid frame (see the module doc); False: every window, with its masks. Raises
    ValueError when a video lacks a key or a key's first axis is not the video's frame
    count, or when ``segments`` is True and a video has no ``segment_ids``.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        window: int,
        stride: int | None = None,
        keys: Sequence[str] | None = None,
        skip_invalid: bool = True,
        segments: bool | None = None,
    ):
        if window < 1 or (stride is not None and stride < 1):
            raise ValueError("window and stride must be >= 1")
        self.window = int(window)
        self.stride = int(stride) if stride is not None else self.window
        self.skip_invalid = bool(skip_invalid)
        located = _locate(source)
        shapes = {video_id: _dataset_shapes(path, group) for video_id, path, group in located}
        self.keys = _choose_keys(shapes, keys)
        self.kinds = _key_kinds(located, self.keys)
        masks = {video_id: _masks_for(path, group, self.keys) for video_id, path, group in located}
        common = set.intersection(*(set(m) for m in masks.values())) if masks else set()
        self.mask_keys = tuple(key for key in MASK_KEYS if key in common)
        """The masks every item carries (those that apply and every video has)."""
        with_ids = [video_id for video_id, *_ in located if SEGMENT_IDS_KEY in shapes[video_id]]
        if segments and len(with_ids) < len(located):
            missing = sorted({video_id for video_id, *_ in located} - set(with_ids))[:5]
            raise ValueError(f"segments=True, but no {SEGMENT_IDS_KEY} in videos {missing}")
        self.by_segment = bool(located) and len(with_ids) == len(located) and segments is not False
        """Whether windows are served per kept segment (see the module doc)."""
        self._videos: dict[str, _Video] = {}
        self._starts: list[int] = []  # first global window index of each video, in order
        total = 0
        for video_id, path, group in located:
            frames = _frame_count(video_id, shapes[video_id], self.keys)
            if self.by_segment:
                ids = _read(path, group, SEGMENT_IDS_KEY)
                starts = segment_window_starts(ids, self.window, self.stride)
            else:
                starts = np.arange(0, max(0, frames - self.window + 1), self.stride, np.int64)
            if self.skip_invalid and starts.size:
                starts = _valid_starts(starts, self.window, masks[video_id], frames)
            self._videos[video_id] = _Video(video_id, path, group, frames, total, starts)
            self._starts.append(total)
            total += int(starts.size)
        self._total = total
        self._order = list(self._videos.values())
        self._pid: int | None = None
        self._files: dict[Path, h5py.File] = {}
        self._images: dict[tuple[Path, str, str], ImageDatasetReader] = {}
        self._inherited: list[Any] = []

    def __len__(self) -> int:
        return self._total

    @property
    def video_ids(self) -> list[str]:
        return list(self._videos)

    def frame_count(self, video_id: str) -> int:
        return self._video(video_id).frame_count

    def locate(self, index: int) -> tuple[str, int]:
        """Global window ``index`` -> (video_id, first frame)."""
        if index < 0:
            index += self._total
        if not 0 <= index < self._total:
            raise IndexError(f"window {index} out of range for {self._total} windows")
        # The last video whose first window is <= index and that has windows.
        position = bisect.bisect_right(self._starts, index) - 1
        while self._order[position].windows == 0:
            position -= 1
        video = self._order[position]
        return video.video_id, int(video.starts[index - video.first])

    def __getitem__(self, index: int) -> dict[str, Any]:
        video_id, start = self.locate(int(index))
        return self.window_at(video_id, start)

    def window_at(self, video_id: str, start: int) -> dict[str, Any]:
        """The window of frames ``start .. start + window - 1`` of ``video_id`` (any start,
        not only multiples of the stride)."""
        video = self._video(video_id)
        if not 0 <= start <= video.frame_count - self.window:
            raise IndexError(
                f"{video_id}: no window of {self.window} frames at {start} "
                f"({video.frame_count} frames)"
            )
        group = self._file(video.path)[video.group]
        stop = start + self.window
        item: dict[str, Any] = {}
        for key in self.keys:
            if key in MASK_KEYS:
                item[key] = torch.from_numpy(np.asarray(group[key][start:stop]))
            elif self.kinds[key] == "images":
                frames = self._image_reader(video, group, key).read(range(start, stop))
                item[key] = torch.from_numpy(frames)
            elif key == TIMESTAMPS_KEY:
                item[key] = torch.from_numpy(np.asarray(group[key][start:stop], np.float64))
            elif key == SEGMENT_IDS_KEY:  # indices, not values
                item[key] = torch.from_numpy(np.asarray(group[key][start:stop], np.int64))
            else:
                values = np.asarray(group[key][start:stop], dtype=np.float32)
                item[key] = torch.from_numpy(values)
        for key in self.mask_keys:
            if key not in item:
                item[key] = torch.from_numpy(np.asarray(group[key][start:stop]))
        item["video_id"] = video_id
        item["start"] = start
        if self.by_segment:
            item["segment"] = int(group[SEGMENT_IDS_KEY][start])
        return item

    def close(self) -> None:
        """Close this process's open files (they reopen on the next access)."""
        self._images.clear()
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:
        # Open handles never travel to another process (spawned DataLoader workers).
        state = self.__dict__.copy()
        state.update(_pid=None, _files={}, _images={}, _inherited=[])
        return state

    def _video(self, video_id: str) -> _Video:
        try:
            return self._videos[video_id]
        except KeyError:
            raise KeyError(f"no video {video_id!r} in this dataset") from None

    def _file(self, path: Path) -> h5py.File:
        pid = os.getpid()
        if self._pid != pid:
            # A forked worker: the parent's handles are not safe to use here. Keep them
            # referenced instead of closing them, so this process never runs HDF5's close
            # (which would release the parent's file locks) on them.
            if self._files:
                self._inherited.append((self._files, self._images))
            self._files, self._images, self._pid = {}, {}, pid
        handle = self._files.get(path)
        if handle is None:
            handle = self._files[path] = h5py.File(path, "r")
        return handle

    def _image_reader(self, video: _Video, group: h5py.Group, key: str) -> ImageDatasetReader:
        cache_key = (video.path, video.group, key)
        reader = self._images.get(cache_key)
        if reader is None:
            reader = self._images[cache_key] = open_images(group[key])
        return reader


def _locate(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[tuple[str, Path, str]]:
    """(video_id, file, group) of every video in ``source``."""
    if isinstance(source, str | os.PathLike):
        root = Path(source)
        if root.is_dir() and (root / INDEX_NAME).exists():
            pack = DatasetPack(root)
            return [
                (video_id, root / pack.entry(video_id).shard, pack.entry(video_id).group)
                for video_id in pack.videos()
            ]
        if root.is_dir():
            files = sorted(p for p in root.glob("*.h5") if not p.name.startswith("."))
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(f"{root} does not exist")
    else:
        files = [Path(p) for p in source]
    located: list[tuple[str, Path, str]] = []
    seen: dict[str, Path] = {}
    for path in files:
        with h5py.File(path, "r") as handle:
            video_id = str(handle.attrs.get("video_id", path.stem))
        if video_id in seen:
            raise ValueError(f"video {video_id!r} is in both {seen[video_id]} and {path}")
        seen[video_id] = path
        located.append((video_id, path, "/"))
    return located


def _dataset_shapes(path: Path, group: str) -> dict[str, tuple[int, ...]]:
    """Shapes of a video's datasets (metadata only; images as stored)."""
    with h5py.File(path, "r") as handle:
        return {
            key: tuple(item.shape)
            for key, item in handle[group].items()
            if isinstance(item, h5py.Dataset)
        }


def _choose_keys(
    shapes: dict[str, dict[str, tuple[int, ...]]], keys: Sequence[str] | None
) -> tuple[str, ...]:
    if keys is None:
        common = set.intersection(*(set(s) for s in shapes.values())) if shapes else set()
        return tuple(sorted(common))
    if clash := set(keys) & set(_ITEM_FIELDS):
        raise ValueError(f"keys {sorted(clash)} clash with the item fields {_ITEM_FIELDS}")
    for video_id, video_shapes in shapes.items():
        if missing := [key for key in keys if key not in video_shapes]:
            raise ValueError(f"video {video_id!r} has no dataset {missing}")
    return tuple(keys)


def _key_kinds(located: list[tuple[str, Path, str]], keys: tuple[str, ...]) -> dict[str, str]:
    """ "images" or "values" per key, from the first video: the ``kind`` attribute pack
    files carry, else the image layout detected."""
    if not located:
        return dict.fromkeys(keys, "values")
    _video_id, path, group = located[0]
    kinds: dict[str, str] = {}
    with h5py.File(path, "r") as handle:
        for key in keys:
            dset = handle[group][key]
            kind = dset.attrs.get("kind")
            is_images = kind == "images" if kind is not None else image_layout(dset) is not None
            kinds[key] = "images" if is_images else "values"
    return kinds


def _frame_count(video_id: str, shapes: dict[str, tuple[int, ...]], keys: Sequence[str]) -> int:
    """The video's frame count (``timestamps``' length); every requested key must have it
    as its first axis."""
    reference = TIMESTAMPS_KEY if TIMESTAMPS_KEY in shapes else (keys[0] if keys else None)
    if reference is None or not shapes[reference]:
        raise ValueError(f"video {video_id!r}: no timestamps to count its frames")
    frames = shapes[reference][0]
    lengths = {key: shapes[key][0] if shapes[key] else None for key in keys}
    if wrong := {key: n for key, n in lengths.items() if n != frames}:
        raise ValueError(f"video {video_id!r} has {frames} frames but first axes {wrong}")
    return frames


def _masks_for(path: Path, group: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The validity masks that apply to a video's windows of ``keys``: ``face_mask`` when
    the file has one, ``audio_mask`` when a requested key's values need audio; as bool
    (N,) arrays, True = valid frame."""
    masks: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as handle:
        video = handle[group]
        if FACE_MASK_KEY in video:
            masks[FACE_MASK_KEY] = np.asarray(video[FACE_MASK_KEY][:]) != 0
        needs_audio = any(
            key in video and video[key].attrs.get(VALID_WHERE_ATTR) == AUDIO_MASK_KEY
            for key in keys
        )
        if (needs_audio or AUDIO_MASK_KEY in keys) and AUDIO_MASK_KEY in video:
            masks[AUDIO_MASK_KEY] = np.asarray(video[AUDIO_MASK_KEY][:]).astype(bool)
    return masks


def _read(path: Path, group: str, key: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return np.asarray(handle[group][key][:])


def segment_window_starts(ids: np.ndarray, window: int, stride: int) -> np.ndarray:
    """int64: first frames of the windows of ``window`` frames inside each kept segment of
    ``ids`` (int (N,), segment index per frame, -1 = dropped; segments contiguous): every
    ``stride`` frames from the segment's first frame, while the window fits in it."""
    ids = np.asarray(ids)
    edges = np.flatnonzero(np.diff(ids)) + 1
    bounds = np.concatenate([[0], edges, [ids.size]]).astype(np.int64)
    starts = [
        np.arange(start, end - window + 1, stride, dtype=np.int64)
        for start, end in itertools.pairwise(bounds)
        if ids[start] >= 0
    ]
    return np.concatenate(starts) if starts else np.zeros(0, np.int64)


def _valid_starts(
    starts: np.ndarray, window: int, masks: dict[str, np.ndarray], frames: int
) -> np.ndarray:
    """The ``starts`` whose window of ``window`` frames is valid in every mask."""
    valid = np.ones(frames, dtype=bool)
    for name, mask in masks.items():
        if mask.shape != (frames,):
            raise ValueError(f"{name} has shape {mask.shape}, the video {frames} frames")
        valid &= mask
    invalid_before = np.concatenate([[0], np.cumsum(~valid)])  # invalid frames in [0, i)
    return starts[invalid_before[starts + window] == invalid_before[starts]]
