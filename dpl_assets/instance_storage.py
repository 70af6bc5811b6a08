"""The SQLite instance storage with one kept connection per database, for ``dpl``'s instances.

Dagster's SQLite event log (:class:`~dagster._core.storage.event_log.SqliteEventLogStorage`)
builds a new SQLAlchemy engine, opens a connection and commits with a full sync for every
event it stores (two of each for an asset event: the run's database and the index). A
``dpl run`` of 6 videos stores ~290 events; measured here, that is ~14 ms of CPU and, on
this disk, 45-70 ms of wall time per event. :class:`PooledSqliteEventLogStorage` is the
same storage, the same files and tables, with an engine kept per database (the index and
the :data:`OPEN_RUN_DATABASES` most recent runs) and ``synchronous=NORMAL`` on its
connections (the databases are in WAL mode already): ~3-4 ms of CPU and 3-9 ms of wall
per event. With ``NORMAL`` in WAL mode a commit is durable once the WAL is checkpointed: a
power cut (not a killed process) may lose the last events, never corrupt the database;
the outputs and their status records are written apart from it.

A new instance gets it through ``instance_class`` in the shipped ``dagster.yaml``
(:class:`DplInstance`): Dagster then asks that class for the storage defaults of the
instance's folder, so the paths follow the folder wherever it is. Processes that open the
same folder with Dagster's own class (an old ``dagster.yaml``) read and write the same
databases. A ``storage:`` block (PostgreSQL) replaces the default as before.

Dagster has no option for this (its SQLite storages connect per call by design; PostgreSQL
is its answer for heavy use): the subclass overrides one private method, ``_connect``, of
the pinned dagster release.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

OPEN_RUN_DATABASES = 4
"""Run databases whose engine is kept (least recently used closed first), besides the index."""


def _synchronous_normal(connection: sqlite3.Connection, _record: Any) -> None:
    connection.execute("PRAGMA synchronous=NORMAL")


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """:class:`SqliteEventLogStorage` keeping one engine (one open connection) per database.

    Same constructor, files and behaviour; see the module docstring for what changes.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._tables_found: set[str] = set()
        super().__init__(base_dir, inst_data)

    def has_table(self, table_name: str) -> bool:
        # Dagster asks before every dynamic-partition read and asset-check event (~49 times
        # a video in the benchmark's graph), each time through a new engine and connection
        # (~0.6 ms of CPU). A table, once there, stays (Dagster's migrations add tables;
        # wipe() empties them and is the one place the cache is cleared, to be safe).
        if table_name in self._tables_found:
            return True
        found = super().has_table(table_name)
        if found:
            self._tables_found.add(table_name)
        return found

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock, self._engine(shard).connect() as connection, connection.begin():
            yield connection

    def _engine(self, shard: str) -> Engine:
        """The kept engine of database ``shard`` (made, and its tables created, on first use).
        Call with ``_db_lock`` held."""
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = create_engine(
                self.conn_string_for_shard(shard),
                poolclass=QueuePool,
                pool_size=1,
                # The one connection serves whichever thread holds _db_lock.
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            )
            event.listen(engine, "connect", _synchronous_normal)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
        self._engines[shard] = engine  # most recently used last
        runs = [name for name in self._engines if name != "index"]
        for name in runs[: max(0, len(runs) - OPEN_RUN_DATABASES)]:
            self._engines.pop(name).dispose()
        return engine

    def _close_engines(self) -> None:
        with self._db_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self._close_engines()  # the run databases' files are deleted
        self._tables_found.clear()
        super().wipe()

    def dispose(self) -> None:
        self._close_engines()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, schedules: unchanged) with
    :class:`PooledSqliteEventLogStorage` as its event log; ``base_dir`` is the instance's
    folder, laid out as Dagster's default."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)  # type: ignore[arg-type]  # (generic self in dagster)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)


class DplInstance(DagsterInstance):
    """Dagster's instance, whose default storage (no ``storage:`` block in ``dagster.yaml``)
    is :class:`PooledSqliteStorage` in the instance's folder."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        return {
            **InstanceRef.config_defaults(base_dir),
            "storage": ConfigurableClassData(
                __name__, PooledSqliteStorage.__name__, yaml.dump({"base_dir": base_dir})
            ),
        }
