"""A dataset-level pack for training at scale, appendable as new videos arrive.

A folder holding:

- ``shard-00000.h5``, ``shard-00001.h5``, ...: groups ``/videos/{name}`` each a copy
  (``h5py`` object copy: encoded images stay as they are) of one per-video pack file
  (:mod:`dpl_assets.packing.video_pack`), attributes included. ``name`` is the video id
  escaped for HDF5 (:func:`group_name`); the real id is the group's ``video_id`` attribute.
- ``index.json``: ``{"format", "version", "shards": [...], "videos": {video_id: {"shard",
  "group", "frame_count", "keys"}}}``: what is in the pack. Only what it lists counts.
- ``dataset.h5``: one HDF5 ExternalLink per video, ``/videos/{name}`` -> that group in its
  shard (relative file names, resolved from ``dataset.h5``'s folder), plus ``video_ids``
  and ``groups`` string datasets: "many videos in one file" for any HDF5 reader.

Appending never modifies an existing shard: new videos go to NEW shard files (each
written under a temp name, renamed when complete), and only then are ``index.json`` and
``dataset.h5`` replaced atomically. A crash mid-append leaves the previous pack intact;
shard files the index does not list are leftovers of such a crash and are removed by the
next append. One writer at a time (appends take turns on a lock file, ``.append.lock``); any
number of readers (no locking).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dpl_assets.storage.atomic import TEMP_PREFIX, atomic_path, atomic_write_text
from dpl_assets.storage.disk_room import ensure_room
from dpl_assets.storage.locks import exclusive

INDEX_NAME = "index.json"
LOCK_NAME = ".append.lock"
LINKS_NAME = "dataset.h5"
PACK_FORMAT = "dpl-dataset-pack"
PACK_FORMAT_VERSION = 1
VIDEOS_GROUP = "videos"
_SHARD_NAME = re.compile(r"^shard-(\d{5,})\.h5$")
# Characters escaped in group names: '%' (the escape itself, so the mapping is reversible),
# '/' (the HDF5 path separator), '.' ('.' alone names the current group; escaping every
# dot keeps names like '..' and '.hidden' plain) and control characters (NUL ends a C
# string). Everything else, unicode and spaces included, is kept as UTF-8.
_ESCAPED = re.compile(r"[%/.\x00-\x1f\x7f]")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def group_name(video_id: str) -> str:
    """A safe, reversible HDF5 link name for ``video_id`` (percent-escapes ``% / .`` and
    control characters): ``"a/b.c"`` -> ``"a%2Fb%2Ec"``."""
    if not isinstance(video_id, str) or not video_id:
        raise ValueError(f"video ids must be non-empty strings, not {video_id!r}")
    return _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", video_id)


def video_id_of(name: str) -> str:
    """Inverse of :func:`group_name`."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), name)


@dataclass(frozen=True)
class VideoEntry:
    """Where one video lives: ``shard`` (file name in the pack folder), ``group`` (path in
    it), ``frame_count`` N, ``keys`` (its datasets, ``timestamps`` included)."""

    video_id: str
    shard: str
    group: str
    frame_count: int
    keys: tuple[str, ...]
    source: tuple[int, int] | None = None  # (size, mtime_ns) of the file it was copied from

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "group": self.group,
            "frame_count": self.frame_count,
            "keys": list(self.keys),
            "source": list(self.source) if self.source else None,
        }


def _file_fingerprint(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


class DatasetPack:
    """The dataset pack in folder ``root`` (created by the first :meth:`append`).

    ``max_shard_bytes``/``max_videos_per_shard``: a shard is closed and a new one started
    before either would be exceeded (a video larger than ``max_shard_bytes`` gets a shard
    of its own). Sizes are estimated from the per-video pack files.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_shard_bytes: int = 4 * 1024**3,
        max_videos_per_shard: int = 1000,
    ):
        if max_shard_bytes <= 0 or max_videos_per_shard <= 0:
            raise ValueError("max_shard_bytes and max_videos_per_shard must be positive")
        self.root = Path(root)
        self.max_shard_bytes = max_shard_bytes
        self.max_videos_per_shard = max_videos_per_shard
        self._entries: dict[str, VideoEntry] = {}
        self._shards: list[str] = []
        self.reload()

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    @property
    def links_path(self) -> Path:
        """``dataset.h5``: every video through one file (external links)."""
        return self.root / LINKS_NAME

    @property
    def shards(self) -> list[str]:
        """Shard file names, oldest first."""
        return list(self._shards)

    def reload(self) -> None:
        """Read ``index.json`` again (another process may have appended)."""
        if not self.index_path.exists():
            self._entries, self._shards = {}, []
            return
        index = json.loads(self.index_path.read_text(encoding="utf-8"))
        if index.get("format") != PACK_FORMAT:
            raise ValueError(f"{self.index_path} is not a {PACK_FORMAT} index")
        self._shards = list(index["shards"])
        self._entries = {
            video_id: VideoEntry(
                video_id=video_id,
                shard=item["shard"],
                group=item["group"],
                frame_count=int(item["frame_count"]),
                keys=tuple(item["keys"]),
                source=tuple(item["source"]) if item.get("source") else None,
            )
            for video_id, item in index["videos"].items()
        }

    def videos(self) -> list[str]:
        """Video ids in the order they were added."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._entries

    def entry(self, video_id: str) -> VideoEntry:
        try:
            return self._entries[video_id]
        except KeyError:
            raise KeyError(f"video {video_id!r} is not in the pack at {self.root}") from None

    @contextlib.contextmanager
    def open_video(self, video_id: str) -> Iterator[h5py.Group]:
        """``with pack.open_video(video_id) as group:``: the video's group, read-only."""
        entry = self.entry(video_id)
        with h5py.File(self.root / entry.shard, "r") as shard:
            yield shard[entry.group]

    def append(self, packed: Mapping[str, Path]) -> list[str]:
        """Add per-video pack files (video id -> path) not yet in the pack; return the ids
        added, in order. An id already present is skipped unless its file changed since it
        was copied (the video was re-processed): then the new copy goes into a new shard
        and the index points at it (the old copy stays, unreferenced, in its shard). Each
        file's ``video_id`` attribute must equal its key. Appends are serialized by a lock
        file, so two processes appending at once take turns."""
        with exclusive(self.root / LOCK_NAME):
            return self._append_locked(packed)

    def _append_locked(self, packed: Mapping[str, Path]) -> list[str]:
        self.reload()
        todo: list[tuple[str, Path, int]] = []
        for video_id, path in packed.items():
            group_name(video_id)  # validates the id
            known = self._entries.get(video_id)
            if known is not None and known.source in (None, _file_fingerprint(Path(path))):
                continue
            with h5py.File(path, "r") as source:
                stored = source.attrs.get("video_id")
            if stored is not None and stored != video_id:
                raise ValueError(f"{path} holds video {stored!r}, not {video_id!r}")
            todo.append((video_id, Path(path), Path(path).stat().st_size))
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        added: dict[str, VideoEntry] = {}
        new_shards: list[str] = []
        for batch in self._batches(todo):
            shard = self._next_shard_name(new_shards)
            added.update(self._write_shard(shard, batch))
            new_shards.append(shard)
        self._entries.update(added)
        self._shards.extend(new_shards)
        if added or not self.index_path.exists():
            self._write_index()
        if added or self._links_stale():
            self._write_links()
        return list(added)

    def _links_stale(self) -> bool:
        """dataset.h5 is missing or older than index.json (a crash between the two)."""
        if not self.links_path.exists():
            return True
        return self.links_path.stat().st_mtime_ns < self.index_path.stat().st_mtime_ns

    def _batches(self, todo: list[tuple[str, Path, int]]) -> Iterator[list[tuple[str, Path]]]:
        batch: list[tuple[str, Path]] = []
        size = 0
        for video_id, path, nbytes in todo:
            full = len(batch) >= self.max_videos_per_shard or size + nbytes > self.max_shard_bytes
            if batch and full:
                yield batch
                batch, size = [], 0
            batch.append((video_id, path))
            size += nbytes
        if batch:
            yield batch

    def _next_shard_name(self, pending: list[str]) -> str:
        names = self._shards + pending
        numbers = [int(m.group(1)) for name in names if (m := _SHARD_NAME.match(name))]
        return f"shard-{max(numbers, default=-1) + 1:05d}.h5"

    def _write_shard(self, shard: str, batch: list[tuple[str, Path]]) -> dict[str, VideoEntry]:
        entries: dict[str, VideoEntry] = {}
        # A shard copies its videos' files: HDF5 does not survive a full disk
        # (dpl_assets.storage.disk_room), so the room for them is checked first.
        ensure_room(self.root, sum(Path(path).stat().st_size for _, path in batch))
        with atomic_path(self.root / shard) as temp, h5py.File(temp, "w") as out:
            out.attrs.update({"format": PACK_FORMAT, "version": PACK_FORMAT_VERSION})
            videos = out.create_group(VIDEOS_GROUP)
            for video_id, path in batch:
                name = group_name(video_id)
                with h5py.File(path, "r") as source:
                    # Object copy: datasets keep their layout, filters and chunks byte for byte.
                    source.copy(source["/"], videos, name=name)
                group = videos[name]
                group.attrs["video_id"] = video_id
                keys = tuple(sorted(k for k, v in group.items() if isinstance(v, h5py.Dataset)))
                frame_count = int(group.attrs.get("frame_count", group["timestamps"].shape[0]))
                entries[video_id] = VideoEntry(
                    video_id, shard, f"/{VIDEOS_GROUP}/{name}", frame_count, keys,
                    _file_fingerprint(Path(path)),
                )  # fmt: skip
        return entries

    def _write_index(self) -> None:
        index = {
            "format": PACK_FORMAT,
            "version": PACK_FORMAT_VERSION,
            "shards": self._shards,
            "videos": {video_id: entry.to_json() for video_id, entry in self._entries.items()},
        }
        atomic_write_text(self.index_path, json.dumps(index, indent=1, ensure_ascii=False))

    def _write_links(self) -> None:
        ensure_room(self.links_path)
        with atomic_path(self.links_path) as temp, h5py.File(temp, "w") as out:
            out.attrs.update({"format": PACK_FORMAT + "-links", "version": PACK_FORMAT_VERSION})
            videos = out.create_group(VIDEOS_GROUP)
            for entry in self._entries.values():
                # A relative file name: HDF5 looks for it beside dataset.h5 first, so the
                # folder can be moved or mounted elsewhere.
                videos[group_name(entry.video_id)] = h5py.ExternalLink(entry.shard, entry.group)
            strings = h5py.string_dtype()
            out.create_dataset("video_ids", data=np.array(self.videos(), dtype=strings))
            groups = [entry.group for entry in self._entries.values()]
            out.create_dataset("groups", data=np.array(groups, dtype=strings))

    def _remove_leftovers(self) -> None:
        """Delete shards the index does not list and temp files: both are what a crashed
        append leaves (single writer assumed)."""
        listed = set(self._shards)
        for path in self.root.iterdir():
            orphan = _SHARD_NAME.match(path.name) is not None and path.name not in listed
            if orphan or path.name.startswith(TEMP_PREFIX):
                path.unlink(missing_ok=True)
