"""``report.json`` kept incrementally: each video's entry is stored and recomputed only when
something it is read from changed, so a rerun with nothing new costs no per-video file work.

The entries live in ``{output_dir}/_index/report.sqlite`` (one row per video: its entry as
the exact JSON text ``report.json`` holds, its status, reason and failed checks, and which
of its files existed), updated in one transaction per report; ``report.json`` itself is
streamed from them, and left alone when nothing in it would change.

What an entry is read from (see :func:`dpl_assets.report.video_report`): the video's
catalog row (its source files), and files in *watched folders*: ``{key}/`` for every
reported datatype and the frame, audio and faces datatypes its stats come from,
``_status/{key}/`` (rejections, failures, damage) and ``_checks/{key}/``. An entry is
recomputed when

- the video is new, changed, restored or named by the caller (the runs just made);
- a file of it in a watched folder appeared, disappeared, or was written (its ctime is not
  older than the last report's start) since the last report: looked for only in folders
  whose own (inode, mtime) changed, so a rerun with nothing new lists no folder at all.

The pipeline writes every file by renaming a finished temp file into place, which changes
its folder's mtime (see :mod:`dpl_assets.folder_stamps` for when a folder counts as
unchanged). An artefact edited *in place* by another tool leaves the folder's mtime alone
and is not noticed (delete ``_index/report.sqlite`` to rebuild every entry).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dpl_assets.datatypes import get_datatype
from dpl_assets.folder_stamps import INDEX_DIR, folder_stamp, fs_clock, granularity, unchanged
from dpl_assets.report import (
    STATS_SOURCES,
    VideoReport,
    counts_of,
    entry_text,
    refused_reports,
    video_report,
    write_document,
)
from dpl_assets.storage.store import CHECKS_DIR, STATUS_DIR, ArtifactStore

CACHE_NAME = "report.sqlite"
VERSION = 3
"""Bumped whenever an entry's content or its text changes: older caches are rebuilt."""
BATCH = 5000  # entries computed and saved per transaction
STATUS_SUFFIXES = (".rejected.json", ".failed.json", ".damaged.json")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    video_id TEXT PRIMARY KEY,
    ord INTEGER NOT NULL,
    mask TEXT NOT NULL,  -- hex: bit i set = the file of slot i existed
    status TEXT NOT NULL,
    reason TEXT,
    checks TEXT,
    text TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_ord ON entries (ord);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Slot:
    """One watched file of every video: ``{folder}/{video_id}{suffix}``."""

    folder: str  # relative to the output dir
    suffix: str


def watched_slots(datatypes: Sequence[str]) -> list[Slot]:
    """Every file an entry over ``datatypes`` is read from, as folder + name suffix."""
    slots = [Slot(key, get_datatype(key).output_extension)
             for key in dict.fromkeys([*datatypes, *STATS_SOURCES])]  # fmt: skip
    for key in datatypes:
        slots += [Slot(f"{STATUS_DIR}/{key}", suffix) for suffix in STATUS_SUFFIXES]
        slots.append(Slot(f"{CHECKS_DIR}/{key}", ".json"))
    return slots


class ReportCache:
    """The stored entries of one output dir's report over one list of datatypes.

    :meth:`update` brings the entries up to date; then :meth:`write` writes a
    ``report.json``, :meth:`counts` and :meth:`notable` answer without reading them all.
    Not thread-safe; concurrent processes are serialized by SQLite's write lock (a report
    made at the same time as another is consistent, the later one wins).
    """

    def __init__(self, store: ArtifactStore, datatypes: Sequence[str]):
        self.store, self.datatypes = store, list(datatypes)
        self.slots = watched_slots(self.datatypes)
        folder = store.output_dir / INDEX_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CACHE_NAME
        self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.conn.executescript(SCHEMA)
        key = self._meta("key")
        if isinstance(key, dict) and key.get("version") != VERSION:  # an older layout
            self.conn.executescript("DROP TABLE entries; DROP TABLE meta;" + SCHEMA)
        self.refused = refused_reports(store)

    def close(self) -> None:
        self.conn.close()

    def _meta(self, key: str) -> object | None:
        found = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if found is None else json.loads(found[0])

    def _set_meta(self, key: str, value: object) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def update(self, video_ids: Sequence[str], dirty: Iterable[str] = ()) -> int:
        """Bring the entries of ``video_ids`` (the registered videos, in report order) up
        to date, recomputing those in ``dirty`` and those whose files changed (see the
        module docstring); entries of other videos are dropped. Returns how many entries
        were recomputed."""
        key = {"version": VERSION, "datatypes": self.datatypes}
        clock = fs_clock(self.path)
        fresh = self._meta("key") != key  # another graph's datatypes, an older layout
        old_clock = None if fresh else self._meta("clock")
        old_stamps = self._meta("folders") or {}
        assert isinstance(old_stamps, dict)
        # the folders' stamps are taken before any file is read: a later change shows
        stamps = {slot.folder: folder_stamp(self.store.output_dir / slot.folder)
                  for slot in self.slots}  # fmt: skip
        ids = hashlib.sha256("\n".join(video_ids).encode()).hexdigest()
        same_ids = not fresh and self._meta("ids") == ids  # the videos of the last update
        wanted = set(video_ids)
        todo = {vid for vid in dirty if vid in wanted}
        if isinstance(old_clock, int):
            untrusted = [
                folder for folder, stamp in stamps.items()
                if folder not in old_stamps or not unchanged(old_stamps[folder], stamp, old_clock)
            ]  # fmt: skip
            since = old_clock - granularity(old_clock)
            todo |= self._changed_in(untrusted, since) & wanted
        else:
            todo = set(wanted)
        if same_ids and not todo:  # nothing to read or write but the stamps (a no-op rerun)
            with _transaction(self.conn):
                self._set_meta("clock", clock)
                self._set_meta("folders", stamps)
            return 0
        stored = {} if fresh else dict(self.conn.execute("SELECT video_id, ord FROM entries"))
        todo |= wanted - stored.keys()
        ords, renumbered = _ords(video_ids, stored)
        gone = [(vid,) for vid in stored.keys() - wanted]
        with _transaction(self.conn):
            if fresh:
                self.conn.execute("DELETE FROM entries")
                self.conn.execute("DELETE FROM meta")
            self.conn.executemany("DELETE FROM entries WHERE video_id = ?", gone)
            if renumbered:
                self.conn.executemany(
                    "UPDATE entries SET ord = ? WHERE video_id = ?",
                    [(ords[vid], vid) for vid in video_ids if vid in stored and vid not in todo],
                )
            self._set_meta("written", {})  # every report.json must be written again
            self._set_meta("counts", None)
        # Entries are saved in batches (a million do not sit in memory); until the last
        # one the stamps stay those of the last update, so a run killed midway leaves
        # nothing the next update would trust wrongly.
        recomputed = 0
        todo_in_order = (vid for vid in video_ids if vid in todo)
        while batch := list(itertools.islice(todo_in_order, BATCH)):
            rows = [(vid, ords.get(vid, stored.get(vid)), *self._row(vid)) for vid in batch]
            with _transaction(self.conn):
                self.conn.executemany(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                )
            recomputed += len(rows)
        with _transaction(self.conn):
            self._set_meta("key", key)
            self._set_meta("ids", ids)
            self._set_meta("clock", clock)
            self._set_meta("folders", stamps)
        return recomputed

    def _changed_in(self, folders: Sequence[str], since_ns: int) -> set[str]:
        """Videos with a file in ``folders`` written at or after ``since_ns`` (ctime), or
        whose file there appeared or disappeared since their entry was made."""
        if not folders:
            return set()
        masks = {
            vid: int(mask, 16)
            for vid, mask in self.conn.execute("SELECT video_id, mask FROM entries")
        }
        changed: set[str] = set()
        for folder in folders:
            bits = {slot.suffix: 1 << index for index, slot in enumerate(self.slots)
                    if slot.folder == folder}  # fmt: skip
            present: dict[str, set[str]] = {suffix: set() for suffix in bits}
            for entry in _listing(self.store.output_dir / folder):
                suffix = next((s for s in bits if entry.name.endswith(s)), None)
                if suffix is None:
                    continue  # a temp file, something foreign
                video_id = entry.name[: -len(suffix)]
                present[suffix].add(video_id)
                try:
                    if entry.stat().st_ctime_ns >= since_ns:
                        changed.add(video_id)
                except FileNotFoundError:
                    changed.add(video_id)  # gone while listed
            for suffix, bit in bits.items():
                had = {vid for vid, mask in masks.items() if mask & bit}
                changed |= had ^ present[suffix]
        return changed

    def _row(self, video_id: str) -> tuple[str, str, str | None, str | None, str]:
        """(mask, status, reason, failed checks JSON or None, entry text) of one video,
        the mask of its files read before the entry (a file made in between is seen next
        time as a change)."""
        mask = 0
        for index, slot in enumerate(self.slots):
            if os.path.exists(self.store.output_dir / slot.folder / (video_id + slot.suffix)):
                mask |= 1 << index
        report = video_report(self.store, video_id, self.datatypes)
        checks = (
            json.dumps(report.failed_checks, ensure_ascii=False) if report.failed_checks else None
        )
        return f"{mask:x}", report.status, report.reason, checks, entry_text(report)

    def counts(self) -> dict[str, int]:
        """The report's ``summary``: videos per status, and those with failed checks (kept
        from the last count while no entry changed)."""
        kept = self._meta("counts")
        if isinstance(kept, dict):
            videos = kept
        else:
            rows = self.conn.execute(
                "SELECT status, checks IS NOT NULL, count(*) FROM entries GROUP BY 1, 2"
            )
            videos = counts_of(())
            for status, checks, count in rows:
                videos[status] += count
                videos["failed_checks"] += count if checks else 0
            with _transaction(self.conn):
                self._set_meta("counts", videos)
        counts = counts_of((r.status, False) for r in self.refused)
        return {key: value + videos[key] for key, value in counts.items()}

    def notable(self) -> list[VideoReport]:
        """The entries not ``processed`` or with failed checks, in report order, with their
        ``video_id``, ``status``, ``reason`` and ``failed_checks`` (the rest left empty)."""
        rows = self.conn.execute(
            "SELECT video_id, status, reason, checks FROM entries "
            "WHERE status != 'processed' OR checks IS NOT NULL ORDER BY ord"
        )
        found = [
            VideoReport(vid, "", status, reason, failed_checks=json.loads(checks or "{}"))
            for vid, status, reason, checks in rows
        ]
        return found + self.refused

    def reports(self) -> list[VideoReport]:
        """Every entry in full (registered videos, then refused files): for small reports."""
        rows = self.conn.execute("SELECT text FROM entries ORDER BY ord")
        return [VideoReport(**json.loads(text)) for (text,) in rows] + self.refused

    def write(self, path: Path, dataset: dict | None = None) -> dict[str, int]:
        """Write ``report.json`` at ``path`` (:func:`write_document`) unless the file there
        is the one this cache last wrote with the same content; returns the counts."""
        counts, dataset = self.counts(), dict(dataset or {})
        refused = [entry_text(r) for r in self.refused]
        digest = hashlib.sha256(json.dumps([counts, dataset, refused]).encode()).hexdigest()
        written = self._meta("written") or {}
        assert isinstance(written, dict)
        if written.get(str(path)) == [digest, _file_stamp(path)]:
            return counts
        texts = (text for (text,) in self.conn.execute("SELECT text FROM entries ORDER BY ord"))
        write_document(path, counts, dataset, [*texts, *refused])
        with _transaction(self.conn):
            self._set_meta("written", {**written, str(path): [digest, _file_stamp(path)]})
        return counts


def _ords(video_ids: Sequence[str], stored: dict[str, int]) -> tuple[dict[str, int], bool]:
    """Sort keys for the entries: stored ones keep theirs while the order allows (videos
    only ever come after the others, or leave), new ones follow; otherwise all are numbered
    afresh. Returns (id -> new sort key, whether stored ones were renumbered)."""
    ords: dict[str, int] = {}
    next_free = max(stored.values(), default=-1) + 1
    last, seen_new = -1, False
    for video_id in video_ids:
        position = stored.get(video_id)
        if position is None:
            ords[video_id], next_free, seen_new = next_free, next_free + 1, True
        elif position <= last or seen_new:
            return {vid: index for index, vid in enumerate(video_ids)}, True
        else:
            last = position
    return ords, False


def _listing(folder: Path) -> Iterator[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            yield from entries
    except FileNotFoundError:
        return


def _file_stamp(path: Path) -> list[int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
