"""The video catalog: which video ids exist and where each one's source files are.

Stored in the SQLite database ``{output_dir}/catalog.sqlite`` (see
:mod:`dpl_assets.catalog_db`; an older ``catalog.json`` is migrated on first open). It is
what makes ids stable across runs (an id once given to a file stays with it) and lets any
process (the CLI, ``dagster dev``, a sensor) find a partition's sources from its key alone.
Registrations are serialized by a lock file; each writes only the rows that changed, in one
transaction. Postgres (for a Postgres instance) is not supported yet: the catalog is always
SQLite in the output dir.

Each entry keeps a fingerprint of each source file (size and modification time in ns, as
make and rsync judge change) so a rescan tells new, changed and removed files apart. A
removed file's entry stays (marked ``removed``; its id is kept should it come back). The
catalog also keeps the last inputs and graph that ``dpl run`` was given, which the sensor,
the schedule and ``dpl backfill`` replay.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from dpl_assets import catalog_db
from dpl_assets.discovery import (
    IdAssignment,
    InputRoots,
    RefusedFile,
    assign_ids,
    readable_id,
    scan_source_files,
)
from dpl_assets.storage.locks import exclusive


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
    """Read and update the catalog database ``catalog.sqlite`` under an output dir.

    Reads never create anything: an output dir without a catalog reads as empty (one with
    only a ``catalog.json`` is migrated first, see :mod:`dpl_assets.catalog_db`). Each
    thread of each process uses its own connection.
    """

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / catalog_db.DB_NAME
        self.json_path = self.output_dir / catalog_db.JSON_NAME
        self._local = threading.local()

    def _conn(self, create: bool = False) -> sqlite3.Connection | None:
        """This thread's connection; None when there is no catalog yet and not ``create``.
        Creates the database (importing ``catalog.json``) under the lock; raises
        :class:`json.JSONDecodeError` when that ``catalog.json`` is not JSON."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            return local.conn
        if not self.path.exists():
            if not (create or self.json_path.exists()):
                return None
            with self._locked():
                if not self.path.exists():
                    catalog_db.create(self.path, self.json_path)
                if self.json_path.exists():  # never deleted: kept beside, renamed
                    os.replace(
                        self.json_path,
                        self.json_path.with_name(catalog_db.JSON_NAME + catalog_db.MIGRATED_SUFFIX),
                    )
        local.conn, local.pid = catalog_db.connect(self.path), os.getpid()
        return local.conn

    def entries(self, include_removed: bool = False) -> dict[str, CatalogEntry]:
        """Registered videos in registration order (empty when nothing is registered);
        videos whose source file was removed only with ``include_removed``."""
        conn = self._conn()
        if conn is None:
            return {}
        return {
            video_id: CatalogEntry(stem=entry["stem"], sources=entry["sources"])
            for video_id, entry in catalog_db.load_videos(conn, fingerprints=False).items()
            if include_removed or not entry["removed"]
        }

    def refused(self) -> list[RefusedEntry]:
        """The files the last scan refused (symbolic links; see :mod:`dpl_assets.discovery`)."""
        conn = self._conn()
        return [] if conn is None else [RefusedEntry(**r) for r in catalog_db.load_refused(conn)]

    def saved_inputs(self) -> dict | None:
        """The inputs spec of the last registration (JSON), or None."""
        conn = self._conn()
        return None if conn is None else cast("dict | None", catalog_db.get_meta(conn, "inputs"))

    def saved_graph(self) -> list | None:
        """The graph (seed JSON) ``dpl run`` last ran, or None."""
        conn = self._conn()
        return None if conn is None else cast("list | None", catalog_db.get_meta(conn, "graph"))

    def save_graph(self, graph: list) -> None:
        """Remember ``graph`` for the sensor, the schedule and ``dpl backfill`` (one row,
        written only when it differs)."""
        conn = self._conn(create=True)
        assert conn is not None
        with _transaction(conn):
            if catalog_db.get_meta(conn, "graph") != graph:
                catalog_db.set_meta(conn, "graph", graph)

    def entry(self, video_id: str) -> CatalogEntry:
        """One video (removed or not). Raises :class:`KeyError` when it is not registered."""
        conn = self._conn()
        found = None if conn is None else catalog_db.load_video(conn, video_id)
        if found is None:
            raise KeyError(
                f"video id {video_id!r} is not in {self.path}; register videos first "
                "(`dpl register --inputs inputs.json --output_dir DIR`)"
            )
        return CatalogEntry(stem=found[0], sources=found[1])

    def snapshot(self) -> dict:
        """The whole catalog as one JSON-able dict (``videos``, ``refused``, ``graph``,
        ``inputs``: the layout ``catalog.json`` had), for inspection and tests."""
        conn = self._conn()
        if conn is None:
            return {}
        data: dict = {"videos": catalog_db.load_videos(conn)}
        for entry in data["videos"].values():
            if not entry["removed"]:
                del entry["removed"]
        for key in ("graph", "inputs"):
            if (value := catalog_db.get_meta(conn, key)) is not None:
                data[key] = value
        if refused := catalog_db.load_refused(conn):
            data["refused"] = refused
        return data

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.output_dir / (catalog_db.DB_NAME + ".lock"))

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

        Registrations are serialized by the catalog's lock file (across processes); the
        rows that changed are written in one transaction, nothing when nothing changed.
        Raises :class:`sqlite3.OperationalError` when the database stays locked longer than
        :data:`dpl_assets.catalog_db.BUSY_TIMEOUT_S`.
        """
        conn = self._conn(create=True)
        assert conn is not None
        with self._locked():
            before = catalog_db.load_videos(conn)
            videos = {vid: _copy_row(row) for vid, row in before.items()}
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
                videos[video_id] = {
                    "stem": source.stem, "sources": {primary: str(source.path)},
                    "fingerprints": {}, "removed": False,
                }  # fmt: skip
            refused += _attach_other_roots(videos, inputs)
            changed, removed, restored = _update_fingerprints(videos, primary, assignment.new)
            for video_id in changed:
                if on_changed is not None:
                    on_changed(video_id)
            entries = [RefusedEntry.of(file) for file in refused]
            _save(conn, before, videos, inputs.to_json(), [vars(e) for e in entries])
        return Registration(
            new_ids=list(assignment.new),
            all_ids=[vid for vid, entry in videos.items() if not entry.get("removed")],
            disambiguated=[str(s.path) for s in assignment.disambiguated],
            changed_ids=changed,
            removed_ids=removed,
            restored_ids=restored,
            refused=entries,
        )


def _copy_row(row: dict) -> dict:
    return {
        "stem": row["stem"],
        "sources": dict(row["sources"]),
        "fingerprints": dict(row["fingerprints"]),
        "removed": row["removed"],
    }


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (takes the write lock now: no deadlock on upgrade) ... COMMIT,
    or ROLLBACK when the block raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _save(
    conn: sqlite3.Connection,
    before: dict[str, dict],
    videos: dict[str, dict],
    inputs: dict,
    refused: list[dict],
) -> None:
    """Write what differs between ``before`` and ``videos`` (and the inputs and refused
    files), row by row, in one transaction; nothing when nothing differs."""
    changed = [vid for vid, row in videos.items() if before.get(vid) != row]
    if (
        not changed
        and catalog_db.get_meta(conn, "inputs") == inputs
        and catalog_db.load_refused(conn) == refused
    ):
        return
    with _transaction(conn):
        for video_id in changed:
            if video_id in before:
                catalog_db.update_video(conn, video_id, before[video_id], videos[video_id])
            else:
                catalog_db.insert_video(conn, video_id, videos[video_id])
        if catalog_db.get_meta(conn, "inputs") != inputs:
            catalog_db.set_meta(conn, "inputs", inputs)
        if catalog_db.load_refused(conn) != refused:
            catalog_db.replace_refused(conn, refused)


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
        if entry.get("removed"):
            entry["removed"] = False
            restored.append(video_id)
        known_before = video_id not in new and bool(prints)
        if known_before and (
            set(prints) != {key for key, value in current.items() if value is not None}
            or any(key in prints and prints[key] != value for key, value in current.items())
        ):
            changed.append(video_id)  # a source's content, or the set of sources, changed
        entry["fingerprints"] = {k: v for k, v in current.items() if v is not None}
    return changed, removed, restored
