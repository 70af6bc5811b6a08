"""The video catalog: which video ids exist and where each one's source files are.

Stored as ``{output_dir}/catalog.json``. It is what makes ids stable across runs (an id once
given to a file stays with it) and lets any process (the CLI, ``dagster dev``, a sensor)
find a partition's sources from its key alone. Updates are atomic and serialized by a lock.

Each entry keeps a fingerprint of each source file (size and modification time in ns, as
make and rsync judge change) so a rescan tells new, changed and removed files apart. A
removed file's entry stays (marked ``removed``; its id is kept should it come back). The
catalog also keeps the last inputs and graph that ``dpl run`` was given, which the sensor,
the schedule and ``dpl backfill`` replay.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dpl_assets.discovery import (
    IdAssignment,
    InputRoots,
    RefusedFile,
    assign_ids,
    readable_id,
    scan_source_files,
)
from dpl_assets.storage.atomic import atomic_write_text
from dpl_assets.storage.locks import exclusive

CATALOG_NAME = "catalog.json"


@dataclass
class CatalogEntry:
    """One video: the stem that matches its files across roots, and datatype -> source path."""

    stem: str
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def primary_source(self) -> str:
        return self.sources.get("video") or next(iter(self.sources.values()))


@dataclass
class Registration:
    """What one :meth:`Catalog.register` call found.

    ``all_ids``: the videos whose files exist (registration order); ``new_ids``: added now;
    ``changed_ids``: a source file's size or modification time differs from the last scan;
    ``removed_ids``: the main source file is gone (since this scan); ``restored_ids``:
    came back after being removed; ``refused``: files under the roots that discovery did
    not take (symbolic links, see :mod:`dpl_assets.discovery`), with their reasons.
    """

    new_ids: list[str]
    all_ids: list[str]
    disambiguated: list[str]
    changed_ids: list[str] = field(default_factory=list)
    removed_ids: list[str] = field(default_factory=list)
    restored_ids: list[str] = field(default_factory=list)
    refused: list[RefusedEntry] = field(default_factory=list)


@dataclass(frozen=True)
class RefusedEntry:
    """A file refused at discovery, as the catalog keeps it: the id it would have had."""

    video_id: str
    datatype: str
    path: str
    reason: str

    @classmethod
    def of(cls, refused: RefusedFile) -> RefusedEntry:
        return cls(readable_id(refused.stem), refused.datatype, str(refused.path), refused.reason)


def fingerprint(path: str | Path) -> list[int] | None:
    """``[size, mtime_ns]`` of a file, or None when it cannot be read (gone, no access)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _attach_other_roots(videos: dict[str, dict], inputs: InputRoots) -> list:
    """Match the user's other roots (precomputed wav, aac, ...) to the videos afresh, by
    relative stem (a file gone there is gone here); returns the files refused there."""
    primary = inputs.primary_key
    by_stem: dict[str, list[str]] = {}
    for video_id, entry in videos.items():
        by_stem.setdefault(entry["stem"], []).append(video_id)
        if primary in entry["sources"]:
            entry["sources"] = {primary: entry["sources"][primary]}
    refused = []
    for key in inputs.roots:
        if key == primary:
            continue
        others, refused_here = scan_source_files(inputs, key)
        refused += refused_here
        for source in others:
            for video_id in by_stem.get(source.stem, []):
                videos[video_id]["sources"][key] = str(source.path)
    return refused


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class Catalog:
    """Read and update ``catalog.json`` under an output dir."""

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / CATALOG_NAME
        self._cached: tuple[tuple[int, int, int], dict] | None = None

    def entries(self, include_removed: bool = False) -> dict[str, CatalogEntry]:
        """Registered videos in registration order (empty when nothing is registered);
        videos whose source file was removed only with ``include_removed``."""
        data = self._read()
        return {
            video_id: CatalogEntry(stem=entry["stem"], sources=dict(entry["sources"]))
            for video_id, entry in data.get("videos", {}).items()
            if include_removed or not entry.get("removed")
        }

    def refused(self) -> list[RefusedEntry]:
        """The files the last scan refused (symbolic links; see :mod:`dpl_assets.discovery`)."""
        return [RefusedEntry(**record) for record in self._read().get("refused", [])]

    def saved_inputs(self) -> dict | None:
        """The inputs spec of the last registration (JSON), or None."""
        return self._read().get("inputs")

    def saved_graph(self) -> list | None:
        """The graph (seed JSON) ``dpl run`` last ran, or None."""
        return self._read().get("graph")

    def save_graph(self, graph: list) -> None:
        """Remember ``graph`` for the sensor, the schedule and ``dpl backfill``."""
        with self._locked():
            data = self._read_copy()
            if data.get("graph") != graph:
                data["graph"] = graph
                atomic_write_text(self.path, json.dumps(data, indent=1, ensure_ascii=False))

    def entry(self, video_id: str) -> CatalogEntry:
        entry = self._read().get("videos", {}).get(video_id)
        if entry is None:
            raise KeyError(
                f"video id {video_id!r} is not in {self.path}; register videos first "
                "(`dpl register --inputs inputs.json --output_dir DIR`)"
            )
        return CatalogEntry(stem=entry["stem"], sources=dict(entry["sources"]))

    def _read(self) -> dict:
        """The parsed file, re-read only when it changed (a step asks once per video)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # rewrites are renames
        if self._cached is None or self._cached[0] != version:
            self._cached = (version, json.loads(self.path.read_text(encoding="utf-8")))
        return self._cached[1]  # shared: callers that modify it copy it first

    def _read_copy(self) -> dict:
        """A private copy of the file's contents to modify (parsing again is several times
        faster than a deep copy of a large catalog)."""
        try:
            return dict(json.loads(self.path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return {}

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.output_dir / (CATALOG_NAME + ".lock"))

    def register(
        self,
        inputs: InputRoots,
        on_changed: Callable[[str], object] | None = None,
        settle_s: float = 0.0,
    ) -> Registration:
        """Scan the input roots: add new videos, notice changed and removed files.

        Existing ids keep their files. A change is reported once: ``on_changed(video_id)``
        (discard that video's outputs, see
        :meth:`dpl_assets.storage.store.ArtifactStore.forget`) runs *before* the new
        fingerprints are saved, so a crash in between reports the change again. New files
        modified less than ``settle_s`` seconds ago (still being copied?) wait for a later
        scan. The user's other roots (wav, aac, ...) are matched afresh on every scan: a
        file added or removed there changes its video too.
        """
        with self._locked():
            before = self._read()
            data = self._read_copy()
            videos: dict[str, dict] = data.get("videos", {})
            primary = inputs.primary_key
            taken = {vid: e["sources"].get(primary, "") for vid, e in videos.items()}
            found, refused = scan_source_files(inputs, primary)
            if settle_s > 0:
                known = set(taken.values())
                now = time.time()
                found = [
                    f for f in found
                    if str(f.path) in known or now - _mtime(f.path) >= settle_s
                ]  # fmt: skip
            assignment: IdAssignment = assign_ids(found, taken)
            for video_id, source in assignment.new.items():
                videos[video_id] = {"stem": source.stem, "sources": {primary: str(source.path)}}
            refused += _attach_other_roots(videos, inputs)
            changed, removed, restored = _update_fingerprints(videos, primary, assignment.new)
            for video_id in changed:
                if on_changed is not None:
                    on_changed(video_id)
            data["videos"] = videos
            data["inputs"] = inputs.to_json()
            entries = [RefusedEntry.of(file) for file in refused]
            data["refused"] = [vars(entry) for entry in entries]
            if not data["refused"]:
                del data["refused"]
            if data != before:  # an unchanged catalog is not rewritten
                atomic_write_text(self.path, json.dumps(data, indent=1, ensure_ascii=False))
        return Registration(
            new_ids=list(assignment.new),
            all_ids=[vid for vid, entry in videos.items() if not entry.get("removed")],
            disambiguated=[str(s.path) for s in assignment.disambiguated],
            changed_ids=changed,
            removed_ids=removed,
            restored_ids=restored,
            refused=entries,
        )


def _update_fingerprints(
    videos: dict[str, dict], primary: str, new: Mapping[str, object]
) -> tuple[list[str], list[str], list[str]]:
    """Refresh every entry's fingerprints in place; return (changed, removed, restored).

    A video is removed when its main file no longer exists (a file only excluded by a
    filter is not removed), changed when any source's fingerprint differs from the one
    recorded (entries from before fingerprints were kept just get one).
    """
    changed: list[str] = []
    removed: list[str] = []
    restored: list[str] = []
    for video_id, entry in videos.items():
        prints = entry.setdefault("fingerprints", {})
        current = {key: fingerprint(path) for key, path in entry["sources"].items()}
        if current.get(primary) is None:
            if not entry.get("removed"):
                entry["removed"] = True
                removed.append(video_id)
            continue
        if entry.pop("removed", False):
            restored.append(video_id)
        known_before = video_id not in new and bool(prints)
        if known_before and (
            set(prints) != {key for key, value in current.items() if value is not None}
            or any(key in prints and prints[key] != value for key, value in current.items())
        ):
            changed.append(video_id)  # a source's content, or the set of sources, changed
        entry["fingerprints"] = {k: v for k, v in current.items() if v is not None}
    return changed, removed, restored
