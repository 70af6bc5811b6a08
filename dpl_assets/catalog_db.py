"""The catalog's tables, and their default home: ``{output_dir}/catalog.sqlite`` (stdlib
:mod:`sqlite3`). With a Postgres instance they live in PostgreSQL instead
(:mod:`dpl_assets.catalog_pg`); the functions here work on either through a
:class:`Database` (SQL written once, in the syntax both accept: ``?`` parameters,
``INSERT ... ON CONFLICT ... DO UPDATE``).

Tables: ``videos`` (registration order, id, stem, removed mark), ``sources`` (video, kind,
path), ``fingerprints`` (video, kind, size in bytes, mtime in ns), ``refused`` (files the
last scan refused) and ``meta`` (small JSON values: the saved graph and inputs). Writes
touch only the rows that changed; each write is one transaction.

WAL journal mode lets readers proceed while a writer commits; a writer that finds the
database locked waits up to :data:`BUSY_TIMEOUT_S` seconds (then :class:`sqlite3.
OperationalError`). Each thread of each process gets its own connection. WAL needs a local
file system (or one with working shared memory): SQLite's documentation advises against
WAL on network file systems.

An output dir written before this database existed has ``catalog.json``: it is imported on
first open (:func:`migrate_json`) and renamed ``catalog.json.migrated``, never deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DB_NAME = "catalog.sqlite"
JSON_NAME = "catalog.json"
MIGRATED_SUFFIX = ".migrated"
BUSY_TIMEOUT_S = 60.0

TABLES = """
CREATE TABLE IF NOT EXISTS videos (
    seq {autoincrement},
    id TEXT NOT NULL UNIQUE,
    stem TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sources (
    video_id TEXT NOT NULL REFERENCES videos(id),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (video_id, kind)
){without_rowid};
CREATE TABLE IF NOT EXISTS fingerprints (
    video_id TEXT NOT NULL REFERENCES videos(id),
    kind TEXT NOT NULL,
    size {int64} NOT NULL,
    mtime_ns {int64} NOT NULL,
    PRIMARY KEY (video_id, kind)
){without_rowid};
CREATE TABLE IF NOT EXISTS refused (
    seq {serial},
    video_id TEXT NOT NULL,
    datatype TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL){without_rowid};
"""
"""The catalog's tables, with each database's words for a sequence number, a 64-bit
integer and a table clustered on its key (:data:`SCHEMA`; PostgreSQL's in
:mod:`dpl_assets.catalog_pg`)."""
SCHEMA = TABLES.format(
    autoincrement="INTEGER PRIMARY KEY AUTOINCREMENT",
    serial="INTEGER PRIMARY KEY",
    int64="INTEGER",
    without_rowid=" WITHOUT ROWID",
)


class Cursor(Protocol):
    """The result of :meth:`Database.execute` (a DB-API cursor): its rows as tuples."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """A connection to the catalog's tables, SQLite or PostgreSQL, in autocommit mode
    (transactions explicit: :func:`transaction`)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement (``?`` parameters); the result rows (a DB-API cursor)."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def begin(self, write: bool) -> None:
        """Start a transaction; ``write``: one that will write (takes the write lock now
        where the database has one, so two writers never deadlock upgrading)."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted through this connection so far."""
        ...

    def registering(self) -> contextlib.AbstractContextManager[None]:
        """Held by a registration (read, compare, write) beside the catalog's lock file:
        serializes registrations where the lock file alone cannot (other machines)."""
        ...


class SqliteDatabase:
    """:class:`Database` over :mod:`sqlite3` (the catalog in the output dir)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def begin(self, write: bool) -> None:
        self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")

    @property
    def total_changes(self) -> int:
        return self.conn.total_changes

    def registering(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # the lock file serializes them: one machine

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def transaction(db: Database, write: bool = True) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    db.begin(write)
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


UPSERT_SOURCE = (
    "INSERT INTO sources VALUES (?, ?, ?) "
    "ON CONFLICT (video_id, kind) DO UPDATE SET path = excluded.path"
)
UPSERT_PRINT = (
    "INSERT INTO fingerprints VALUES (?, ?, ?, ?) "
    "ON CONFLICT (video_id, kind) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns"
)

# One video as the catalog's logic handles it: {"stem": str, "sources": {kind: path},
# "fingerprints": {kind: [size, mtime_ns]}, "removed": bool (absent = False)}.
VideoRow = dict


def connect(path: Path) -> SqliteDatabase:
    """A connection to an existing database, in autocommit mode (transactions explicit)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; consistent always
    return SqliteDatabase(conn)


def create(path: Path, json_path: Path) -> None:
    """Create the database at ``path`` atomically (built aside, then renamed), importing
    ``json_path`` when it exists. Call under the catalog's lock.

    Raises :class:`json.JSONDecodeError` when ``catalog.json`` is not valid JSON.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.staging-{os.getpid()}")
    staging.unlink(missing_ok=True)
    conn = sqlite3.connect(staging, isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        if json_path.exists():
            migrate_json(SqliteDatabase(conn), read_json(json_path))
    finally:
        conn.close()
    os.replace(staging, path)


def set_aside(old: Path) -> None:
    """Keep an imported catalog beside, renamed ``{name}.migrated`` (never deleted)."""
    os.replace(old, old.with_name(old.name + MIGRATED_SUFFIX))


def read_json(json_path: Path) -> dict:
    """A ``catalog.json``'s contents. Raises :class:`json.JSONDecodeError` when not JSON."""
    return dict(json.loads(json_path.read_text(encoding="utf-8") or "{}"))


def migrate_json(db: Database, data: dict) -> None:
    """Import the contents of a ``catalog.json`` (the format before this database), or of
    :func:`export` of another catalog database, in one transaction: videos in their order,
    sources, fingerprints, refused files, graph, inputs (rows written in batches)."""
    changes = Changes()
    for video_id, entry in data.get("videos", {}).items():
        row = _row(entry)
        changes.inserted.append((video_id, row["stem"], int(row["removed"])))
        changes.sources_set += [(video_id, kind, path) for kind, path in row["sources"].items()]
        changes.prints_set += [
            (video_id, kind, size, mtime) for kind, (size, mtime) in row["fingerprints"].items()
        ]
    with transaction(db):
        write_changes(db, changes)
        replace_refused(db, data.get("refused", []))
        for key in ("graph", "inputs"):
            if data.get(key) is not None:
                set_meta(db, key, data[key])


def export(db: Database) -> dict:
    """The whole catalog in ``catalog.json``'s layout (what :func:`migrate_json` reads)."""
    data: dict = {"videos": load_videos(db), "refused": load_refused(db)}
    for key in ("graph", "inputs"):
        data[key] = get_meta(db, key)
    return data


def _row(entry: dict) -> VideoRow:
    return {
        "stem": entry["stem"],
        "sources": dict(entry.get("sources", {})),
        "fingerprints": {k: list(v) for k, v in entry.get("fingerprints", {}).items()},
        "removed": bool(entry.get("removed", False)),
    }


def load_videos(conn: Database, fingerprints: bool = True) -> dict[str, VideoRow]:
    """Every video (removed ones too), in registration order; without their fingerprints
    (left empty) unless ``fingerprints``."""
    videos: dict[str, VideoRow] = {
        video_id: {"stem": stem, "sources": {}, "fingerprints": {}, "removed": bool(removed)}
        for video_id, stem, removed in conn.execute(
            "SELECT id, stem, removed FROM videos ORDER BY seq"
        )
    }
    for video_id, kind, path in conn.execute("SELECT video_id, kind, path FROM sources"):
        videos[video_id]["sources"][kind] = path
    rows: Iterable[Any] = conn.execute("SELECT * FROM fingerprints") if fingerprints else []
    for video_id, kind, size, mtime in rows:
        videos[video_id]["fingerprints"][kind] = [size, mtime]
    return videos


@dataclass
class State:
    """The catalog as :meth:`dpl_assets.catalog.Catalog.register` compares it with a scan:
    by column, not a dict per video (a million of those cost seconds to build).

    ``order``: every id in registration order; ``removed``: the ids marked removed;
    ``sources``: kind -> {id: path}; ``prints``: kind -> {id: (size, mtime_ns)}.
    """

    order: list[str]
    removed: set[str]
    sources: dict[str, dict[str, str]]
    prints: dict[str, dict[str, tuple[int, int]]]


def load_state(conn: Database) -> State:
    """The whole catalog as a :class:`State` (read in one transaction)."""
    with transaction(conn, write=False):
        order = [video_id for (video_id,) in conn.execute("SELECT id FROM videos ORDER BY seq")]
        removed = {
            video_id for (video_id,) in conn.execute("SELECT id FROM videos WHERE removed != 0")
        }
        sources: dict[str, dict[str, str]] = {}
        for (kind,) in conn.execute("SELECT DISTINCT kind FROM sources").fetchall():
            query = "SELECT video_id, path FROM sources WHERE kind = ?"
            sources[kind] = dict(conn.execute(query, (kind,)))
        prints: dict[str, dict[str, tuple[int, int]]] = {}
        for (kind,) in conn.execute("SELECT DISTINCT kind FROM fingerprints").fetchall():
            query = "SELECT video_id, size, mtime_ns FROM fingerprints WHERE kind = ?"
            prints[kind] = {
                video_id: (size, mtime) for video_id, size, mtime in conn.execute(query, (kind,))
            }
    return State(order, removed, sources, prints)


def load_present_ids(conn: Database) -> list[str]:
    """The ids of the videos not marked removed, in registration order."""
    query = "SELECT id FROM videos WHERE removed = 0 ORDER BY seq"
    return [video_id for (video_id,) in conn.execute(query)]


def load_stems(conn: Database) -> dict[str, str]:
    """id -> stem of every video (removed ones too)."""
    return dict(conn.execute("SELECT id, stem FROM videos"))


@dataclass
class Changes:
    """Rows to write, as :func:`write_changes` takes them."""

    inserted: list[tuple[str, str, int]] = field(default_factory=list)  # id, stem, removed
    removed: list[tuple[int, str]] = field(default_factory=list)  # removed, id
    sources_deleted: list[tuple[str, str]] = field(default_factory=list)  # id, kind
    sources_set: list[tuple[str, str, str]] = field(default_factory=list)  # id, kind, path
    prints_deleted: list[tuple[str, str]] = field(default_factory=list)  # id, kind
    prints_set: list[tuple[str, str, int, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(vars(self).values())


def write_changes(conn: Database, changes: Changes) -> None:
    """Write ``changes`` (inside the caller's transaction): new videos after all others."""
    conn.executemany("INSERT INTO videos (id, stem, removed) VALUES (?, ?, ?)", changes.inserted)
    conn.executemany("UPDATE videos SET removed = ? WHERE id = ?", changes.removed)
    conn.executemany("DELETE FROM sources WHERE video_id = ? AND kind = ?", changes.sources_deleted)
    conn.executemany(UPSERT_SOURCE, changes.sources_set)
    conn.executemany(
        "DELETE FROM fingerprints WHERE video_id = ? AND kind = ?", changes.prints_deleted
    )
    conn.executemany(UPSERT_PRINT, changes.prints_set)


def load_video(conn: Database, video_id: str) -> tuple[str, dict[str, str]] | None:
    """``(stem, {kind: path})`` of one video (removed or not), or None when unknown."""
    found = conn.execute("SELECT stem FROM videos WHERE id = ?", (video_id,)).fetchone()
    if found is None:
        return None
    rows = conn.execute("SELECT kind, path FROM sources WHERE video_id = ?", (video_id,))
    return found[0], dict(rows.fetchall())


def insert_video(conn: Database, video_id: str, row: VideoRow) -> None:
    """Add a video (after all others in registration order) with its sources and prints."""
    conn.execute(
        "INSERT INTO videos (id, stem, removed) VALUES (?, ?, ?)",
        (video_id, row["stem"], int(row.get("removed", False))),
    )
    _write_children(conn, video_id, row, {"sources": {}, "fingerprints": {}})


def update_video(conn: Database, video_id: str, old: VideoRow, new: VideoRow) -> None:
    """Write the differences between two states of a video: only the rows that changed."""
    if bool(old.get("removed")) != bool(new.get("removed")):
        conn.execute(
            "UPDATE videos SET removed = ? WHERE id = ?", (int(bool(new.get("removed"))), video_id)
        )
    _write_children(conn, video_id, new, old)


def _write_children(conn: Database, video_id: str, new: VideoRow, old: VideoRow) -> None:
    for kind in old["sources"].keys() - new["sources"].keys():
        conn.execute("DELETE FROM sources WHERE video_id = ? AND kind = ?", (video_id, kind))
    for kind, path in new["sources"].items():
        if old["sources"].get(kind) != path:
            conn.execute(UPSERT_SOURCE, (video_id, kind, path))
    for kind in old["fingerprints"].keys() - new["fingerprints"].keys():
        conn.execute("DELETE FROM fingerprints WHERE video_id = ? AND kind = ?", (video_id, kind))
    for kind, (size, mtime) in new["fingerprints"].items():
        if old["fingerprints"].get(kind) != [size, mtime]:
            conn.execute(
                UPSERT_PRINT,
                (video_id, kind, size, mtime),
            )


def load_refused(conn: Database) -> list[dict]:
    """The refused files as ``{video_id, datatype, path, reason}`` records, in scan order."""
    rows = conn.execute("SELECT video_id, datatype, path, reason FROM refused ORDER BY seq")
    return [dict(zip(("video_id", "datatype", "path", "reason"), row, strict=True)) for row in rows]


def replace_refused(conn: Database, records: Iterable[dict]) -> None:
    """Replace the refused files (a short list, rewritten only when it changed)."""
    conn.execute("DELETE FROM refused")
    conn.executemany(
        "INSERT INTO refused (video_id, datatype, path, reason) VALUES (?, ?, ?, ?)",
        [(r["video_id"], r["datatype"], r["path"], r["reason"]) for r in records],
    )


def get_meta(conn: Database, key: str) -> object | None:
    """The JSON value stored under ``key``, or None."""
    found = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if found is None else json.loads(found[0])


def set_meta(conn: Database, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, json.dumps(value, ensure_ascii=False)),
    )
