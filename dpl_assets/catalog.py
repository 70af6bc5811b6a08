"""The video catalog: which video ids exist and where each one's source files are.

Stored as ``{output_dir}/catalog.json``. It is what makes ids stable across runs (an id once
given to a file stays with it) and lets any process (the CLI, ``dagster dev``, a sensor)
find a partition's sources from its key alone. Updates are atomic and serialized by a lock.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dpl_assets.discovery import IdAssignment, InputRoots, assign_ids, find_source_files
from dpl_assets.storage.atomic import atomic_write_text

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
    """What one :func:`register_sources` call changed."""

    new_ids: list[str]
    all_ids: list[str]
    disambiguated: list[str]


class Catalog:
    """Read and update ``catalog.json`` under an output dir."""

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / CATALOG_NAME
        self._cached: tuple[tuple[int, int, int], dict] | None = None

    def entries(self) -> dict[str, CatalogEntry]:
        """All registered videos in registration order (empty when nothing is registered)."""
        data = self._read()
        return {
            video_id: CatalogEntry(stem=entry["stem"], sources=dict(entry["sources"]))
            for video_id, entry in data.get("videos", {}).items()
        }

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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / (CATALOG_NAME + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def register(self, inputs: InputRoots) -> Registration:
        """Scan the input roots and add new videos; existing ids keep their files."""
        with self._locked():
            before = self._read()
            data = copy.deepcopy(before)
            videos: dict[str, dict] = data.get("videos", {})
            primary = inputs.primary_key
            taken = {vid: e["sources"].get(primary, "") for vid, e in videos.items()}
            assignment: IdAssignment = assign_ids(find_source_files(inputs, primary), taken)
            for video_id, source in assignment.new.items():
                videos[video_id] = {"stem": source.stem, "sources": {primary: str(source.path)}}
            by_stem: dict[str, list[str]] = {}
            for video_id, entry in videos.items():
                by_stem.setdefault(entry["stem"], []).append(video_id)
            # Other roots (precomputed wav, aac, ...) attach to videos by relative stem.
            for key in inputs.roots:
                if key == primary:
                    continue
                for source in find_source_files(inputs, key):
                    for video_id in by_stem.get(source.stem, []):
                        videos[video_id]["sources"][key] = str(source.path)
            data["videos"] = videos
            data["inputs"] = inputs.to_json()
            if data != before:  # an unchanged catalog is not rewritten
                atomic_write_text(self.path, json.dumps(data, indent=1, ensure_ascii=False))
        return Registration(
            new_ids=list(assignment.new),
            all_ids=list(videos),
            disambiguated=[str(s.path) for s in assignment.disambiguated],
        )
