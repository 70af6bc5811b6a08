"""The video catalog: which video ids exist and where each one's source files are.

Stored in the SQLite database ``{output_dir}/catalog.sqlite`` (see
:mod:`dpl_assets.catalog_db`; an older ``catalog.json`` is migrated on first open). It is
what makes ids stable across runs (an id once given to a file stays with it) and lets any
process (the CLI, ``dagster dev``, a sensor) find a partition's sources from its key alone.
Registrations are serialized by a lock file; each writes only the rows that changed, in one
transaction. When the output dir's Dagster instance stores in PostgreSQL, so does the
catalog: its tables in a schema of that database of its own
(:mod:`dpl_assets.catalog_pg`; a ``catalog.sqlite`` or ``catalog.json`` there is imported
on first use).

Each entry keeps a fingerprint of each source file (size and modification time in ns, as
make and rsync judge change) so a rescan tells new, changed and removed files apart. A
removed file's entry stays (marked ``removed``; its id is kept should it come back). A
rescan of an unchanged tree is answered without walking it (:mod:`dpl_assets.tree_digest`).
The catalog also keeps the last inputs and graph that ``dpl run`` was given, which the sensor,
the schedule and ``dpl backfill`` replay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from dpl_assets import catalog_db, catalog_pg
from dpl_assets.datatypes import get_datatype
from dpl_assets.discovery import (
    IdAssignment,
    InputRoots,
    RefusedFile,
    SourceFile,
    assign_new_ids,
    readable_id,
    walk_source_files,
)
from dpl_assets.folder_stamps import INDEX_DIR
from dpl_assets.storage.atomic import atomic_write_text
from dpl_assets.storage.locks import exclusive
from dpl_assets.tree_digest import tree_digest

SCAN_RECORD = "catalog_scan.json"
"""``{output_dir}/_index/catalog_scan.json``: the tree digest of the last complete scan
(:mod:`dpl_assets.tree_digest`) and a digest of the videos it left (derived: a missing or
unreadable record only costs one full scan)."""


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
    found = _fingerprint(path)
    return None if found is None else list(found)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class Catalog:
    """Read and update the catalog database (``catalog.sqlite`` under an output dir, or its
    schema in the instance's PostgreSQL database).

    Reads never create anything: an output dir without a catalog reads as empty (one with
    only a ``catalog.json`` is migrated first, see :mod:`dpl_assets.catalog_db`). Each
    thread of each process uses its own connection.
    """

    def __init__(self, output_dir: Path | str):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / catalog_db.DB_NAME
        self.json_path = self.output_dir / catalog_db.JSON_NAME
        self._local = threading.local()

    def _conn(self, create: bool = False) -> catalog_db.Database | None:
        """This thread's connection; None when there is no catalog yet and not ``create``.
        Creates the catalog (importing an older one: ``catalog.json``, or ``catalog.sqlite``
        for one moving to Postgres) under the lock; raises :class:`json.JSONDecodeError`
        when that ``catalog.json`` is not JSON."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            return local.conn
        url = catalog_pg.instance_postgres_url(self.output_dir)
        conn: catalog_db.Database | None
        if url is not None:
            conn = catalog_pg.open_catalog(self.output_dir, url, create, self._locked)
            if conn is None:
                return None
        else:
            if not self.path.exists():
                if not (create or self.json_path.exists()):
                    return None
                with self._locked():
                    if not self.path.exists():
                        catalog_db.create(self.path, self.json_path)
                    if self.json_path.exists():
                        catalog_db.set_aside(self.json_path)
            conn = catalog_db.connect(self.path)
        local.conn, local.pid = conn, os.getpid()
        return conn

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
        with catalog_db.transaction(conn):
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

        A rescan that finds the tree the last complete scan found (the same entries with
        the same inode, size and mtime under every root: :mod:`dpl_assets.tree_digest`)
        and the catalog's videos as that scan left them answers from the catalog without
        walking: nothing new, changed or removed. A scan is complete, and recorded in
        ``_index/`` (:data:`SCAN_RECORD`), when no new file was left to settle and every
        source the catalog keeps lies under the roots (so the digest sees it).

        Registrations are serialized by the catalog's lock file (across processes); the
        rows that changed are written in one transaction, nothing when nothing changed.
        Raises :class:`sqlite3.OperationalError` when the SQLite database stays locked
        longer than :data:`dpl_assets.catalog_db.BUSY_TIMEOUT_S`.
        """
        conn = self._conn(create=True)
        assert conn is not None
        with self._locked(), conn.registering():
            # listed before the walk: a change made during it shows in the next digest
            digest = tree_digest(inputs)
            if digest is not None and (unchanged := self._unchanged(conn, digest)) is not None:
                return unchanged
            self._scan_record.unlink(missing_ok=True)  # before the catalog changes
            state = catalog_db.load_state(conn)
            primary = inputs.primary_key
            scan = _Scan(inputs, state, settle_s)
            assignment = assign_new_ids(scan.fresh, set(state.order) if scan.fresh else ())
            sources = _new_sources(conn, inputs, state, assignment, scan)
            update = _Update(state, primary, assignment, sources, scan.stats)
            for video_id in update.changed:
                if on_changed is not None:
                    on_changed(video_id)
            entries = [RefusedEntry.of(file) for file in scan.refused]
            _save(conn, update.rows, inputs.to_json(), [vars(e) for e in entries])
            all_ids = [vid for vid in update.order if vid not in update.removed_now]
            if digest is not None and not scan.held_back and _all_under(inputs, sources):
                record = {"tree": digest, "videos": ids_digest(all_ids)}
                atomic_write_text(self._scan_record, json.dumps(record))
        return Registration(
            new_ids=list(assignment.new),
            all_ids=all_ids,
            disambiguated=[str(s.path) for s in assignment.disambiguated],
            changed_ids=update.changed,
            removed_ids=update.removed,
            restored_ids=update.restored,
            refused=entries,
        )

    @property
    def _scan_record(self) -> Path:
        return self.output_dir / INDEX_DIR / SCAN_RECORD

    def _unchanged(self, conn: catalog_db.Database, digest: str) -> Registration | None:
        """The registration of a tree that is the one the last complete scan saw (its
        ``digest``), the catalog as that scan left it: every present video, nothing new,
        changed or removed. None when the record does not say so."""
        try:
            record = json.loads(self._scan_record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("tree") != digest:
            return None
        all_ids = catalog_db.load_present_ids(conn)
        if record.get("videos") != ids_digest(all_ids):
            return None  # another catalog, or one changed by other means
        refused = [RefusedEntry(**r) for r in catalog_db.load_refused(conn)]
        return Registration(new_ids=[], all_ids=all_ids, disambiguated=[], refused=refused)


def ids_digest(video_ids: Sequence[str]) -> str:
    """A digest of a list of video ids, in order (what records of a set of videos keep)."""
    return hashlib.sha256("\n".join(video_ids).encode()).hexdigest()


def _all_under(inputs: InputRoots, sources: dict[str, dict[str, str]]) -> bool:
    """Whether every source path the catalog keeps lies under an input root (so the tree
    digest sees each of them; a video from a root no longer given is statted by path)."""
    prefixes = tuple(
        str(root).rstrip(os.sep) + os.sep for roots in inputs.roots.values() for root in roots
    )
    return all(path.startswith(prefixes) for paths in sources.values() for path in paths.values())


class _Scan:
    """The primary root's scan: the files not registered yet (``fresh``, those settled),
    the stats of every regular file found, the files refused."""

    def __init__(self, inputs: InputRoots, state: catalog_db.State, settle_s: float):
        primary = inputs.primary_key
        self.stats: dict[str, tuple[int, int]] = {}
        found, self.refused = walk_source_files(inputs, primary, self.stats)
        known = state.sources.get(primary, {})
        registered = set(known.values())
        self.fresh = [
            SourceFile(primary, root, Path(path), relative)
            for root, path, relative in found
            if path not in registered
        ]
        self.held_back = 0  # new files left for a later scan
        if settle_s > 0:  # new files modified less than settle_s ago wait
            now = time.time()
            settled = [f for f in self.fresh if now - _mtime(f.path) >= settle_s]
            self.held_back, self.fresh = len(self.fresh) - len(settled), settled


def _new_sources(
    conn: catalog_db.Database,
    inputs: InputRoots,
    state: catalog_db.State,
    assignment: IdAssignment,
    scan: _Scan,
) -> dict[str, dict[str, str]]:
    """kind -> {id: path} after this scan: each video's primary file (kept from the catalog,
    or new), and the user's other roots (precomputed wav, aac, ...) matched to the videos
    afresh by relative stem (a file gone there is gone here). A video without a primary
    file (the primary datatype changed) keeps its other sources too. Adds the files refused
    in other roots to ``scan.refused`` and their stats to ``scan.stats``."""
    primary = inputs.primary_key
    primaries = dict(state.sources.get(primary, {}))
    primaries.update((vid, str(source.path)) for vid, source in assignment.new.items())
    sources: dict[str, dict[str, str]] = {primary: primaries}
    if any(kind != primary for kind in state.sources):
        without = [vid for vid in state.order if vid not in primaries]
        for kind, paths in state.sources.items():
            kept = {vid: paths[vid] for vid in without if vid in paths and kind != primary}
            if kept:
                sources[kind] = kept
    others = [key for key in inputs.roots if key != primary]
    if not others:
        return sources
    stems = catalog_db.load_stems(conn)
    stems.update((vid, source.stem) for vid, source in assignment.new.items())
    by_stem: dict[str, list[str]] = {}
    for vid in (*state.order, *assignment.new):
        by_stem.setdefault(stems[vid], []).append(vid)
    for key in others:
        found, refused = walk_source_files(inputs, key, scan.stats)
        scan.refused += refused
        datatype = get_datatype(key)
        paths = sources.setdefault(key, {})
        for _, path, relative in found:
            for vid in by_stem.get(datatype.strip_extension(relative), ()):
                paths[vid] = path
    return {kind: paths for kind, paths in sources.items() if paths or kind == primary}


class _Update:
    """Each video's new fingerprints and removed mark, what changed, and the rows to write.

    A video is removed when its main file no longer exists (a file only excluded by a
    filter is not removed), changed when any source's fingerprint differs from the one
    recorded (entries from before fingerprints were kept just get one). A removed video
    keeps its last fingerprints.
    """

    def __init__(
        self,
        state: catalog_db.State,
        primary: str,
        assignment: IdAssignment,
        sources: dict[str, dict[str, str]],
        stats: dict[str, tuple[int, int]],
    ):
        self.state, self.primary, self.sources, self.stats = state, primary, sources, stats
        self.new = assignment.new
        self.order = [*state.order, *assignment.new]
        self.changed: list[str] = []
        self.removed: list[str] = []
        self.restored: list[str] = []
        self.removed_now = set(state.removed)
        self.rows = catalog_db.Changes()
        # videos that need more than "is the main file's fingerprint the same": other
        # sources (now or before), removed, new, no main file
        slow = set(state.removed) | set(assignment.new)
        for table in (state.sources, state.prints, sources):
            for kind, by_id in table.items():
                if kind != primary:
                    slow.update(by_id)
        primaries = sources[primary]
        prints = state.prints.get(primary, {})
        for vid in self.order:
            if vid not in slow and (path := primaries.get(vid)) is not None:
                current = stats.get(path) or _fingerprint(path)
                if current is not None and prints.get(vid) == current:
                    continue  # the steady case: nothing to do
            self._video(vid)

    def _video(self, vid: str) -> None:
        state, primary = self.state, self.primary
        before = {kind: paths[vid] for kind, paths in state.sources.items() if vid in paths}
        after = {kind: paths[vid] for kind, paths in self.sources.items() if vid in paths}
        prints = {kind: by_id[vid] for kind, by_id in state.prints.items() if vid in by_id}
        current = {kind: self.stats.get(path) or _fingerprint(path) for kind, path in after.items()}
        was_removed = vid in state.removed
        if current.get(primary) is None:
            now_prints = prints  # kept
            if not was_removed:
                self.removed.append(vid)
                self.removed_now.add(vid)
        else:
            if was_removed:
                self.restored.append(vid)
                self.removed_now.discard(vid)
            now_prints = {kind: value for kind, value in current.items() if value is not None}
            if (vid not in self.new and prints) and (
                set(prints) != set(now_prints)
                or any(kind in prints and prints[kind] != value for kind, value in current.items())
            ):
                self.changed.append(vid)  # a source's content, or the set of sources, changed
        rows, removed = self.rows, vid in self.removed_now
        if vid in self.new:
            rows.inserted.append((vid, self.new[vid].stem, int(removed)))
        elif removed != was_removed:
            rows.removed.append((int(removed), vid))
        rows.sources_deleted += [(vid, kind) for kind in before.keys() - after.keys()]
        rows.sources_set += [(vid, k, p) for k, p in after.items() if before.get(k) != p]
        rows.prints_deleted += [(vid, kind) for kind in prints.keys() - now_prints.keys()]
        rows.prints_set += [
            (vid, kind, *value) for kind, value in now_prints.items() if prints.get(kind) != value
        ]


def _fingerprint(path: str | Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file (the scan's stats have this form), None if unreadable."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def _save(
    conn: catalog_db.Database, rows: catalog_db.Changes, inputs: dict, refused: list[dict]
) -> None:
    """Write the rows that changed (and the inputs and refused files when they differ) in
    one transaction; nothing when nothing differs."""
    if (
        not rows
        and catalog_db.get_meta(conn, "inputs") == inputs
        and catalog_db.load_refused(conn) == refused
    ):
        return
    with catalog_db.transaction(conn):
        catalog_db.write_changes(conn, rows)
        if catalog_db.get_meta(conn, "inputs") != inputs:
            catalog_db.set_meta(conn, "inputs", inputs)
        if catalog_db.load_refused(conn) != refused:
            catalog_db.replace_refused(conn, refused)
