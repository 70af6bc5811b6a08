"""The catalog in PostgreSQL, for an output dir whose Dagster instance stores there.

When the instance's ``dagster.yaml`` (``DAGSTER_HOME``, else ``{output_dir}/.dagster``: see
:func:`dpl_assets.settings.instance_dir_for`) has ``storage: postgres:`` (``dpl
init-instance --postgres``, :file:`dpl_assets/configs/postgres_storage.yaml`), the catalog's
tables (:mod:`dpl_assets.catalog_db`) live in that database, in a schema of the output
dir's own: its name (``dpl_catalog_`` and 16 hex digits, drawn once) is kept in
``{output_dir}/catalog.postgres.json``, so every process that reaches the output dir (on
any machine, under any mount path) finds the same tables, and two output dirs on one server
never share them. The connection is the instance's own (``postgres_url``, or
``postgres_db`` with ``{env: NAME}`` values read from the environment), through psycopg2
(the ``postgres`` extra).

On first use an existing ``catalog.sqlite`` (or ``catalog.json``) of the output dir is
imported in one transaction and renamed ``*.migrated``. Registrations are serialized by
the catalog's lock file and a PostgreSQL advisory lock of the schema (the lock file alone
does not reach other machines); every write is one transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from dpl_assets import catalog_db
from dpl_assets.settings import instance_dir_for
from dpl_assets.storage.atomic import atomic_write_text

SCHEMA_FILE = "catalog.postgres.json"
BATCH_ROWS = 1000  # rows per round trip in executemany
IDENTITY = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
TABLES = catalog_db.TABLES.format(
    autoincrement=IDENTITY, serial=IDENTITY, int64="BIGINT", without_rowid=""
)
"""The catalog's tables (:data:`dpl_assets.catalog_db.TABLES`) in PostgreSQL's words."""


class CatalogConfigError(RuntimeError):
    """The instance names PostgreSQL but its settings cannot be used (a variable unset,
    the ``postgres`` extra missing)."""


def instance_postgres_url(output_dir: Path) -> str | None:
    """The PostgreSQL URL of the output dir's instance storage, or None when the instance
    is not on PostgreSQL (or has no ``dagster.yaml`` yet). Raises
    :class:`CatalogConfigError` when a variable it names is unset."""
    path = instance_dir_for(Path(output_dir)) / "dagster.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    # libyaml's parser when present: every new step thread reads this (~1.3 ms in Python)
    if yaml.__with_libyaml__:
        config = yaml.load(text, Loader=yaml.CSafeLoader)
    else:
        config = yaml.safe_load(text)
    storage = config.get("storage") if isinstance(config, dict) else None
    postgres = storage.get("postgres") if isinstance(storage, dict) else None
    if not isinstance(postgres, dict):
        return None
    try:
        from dagster_postgres.utils import pg_url_from_config
    except ImportError as error:
        raise CatalogConfigError(
            f"{path} stores in PostgreSQL: install the postgres extra ({error})"
        ) from None
    return str(pg_url_from_config(_resolved(postgres, path)))


def _resolved(value: Any, path: Path) -> Any:
    """``value`` with every ``{env: NAME}`` replaced by that variable (Dagster's config
    convention)."""
    if isinstance(value, dict) and set(value) == {"env"}:
        name = value["env"]
        if name not in os.environ:
            raise CatalogConfigError(f"{name} is not set ({path} reads it)")
        return os.environ[name]
    if isinstance(value, dict):
        return {key: _resolved(item, path) for key, item in value.items()}
    return value


class PostgresDatabase:
    """:class:`~dpl_assets.catalog_db.Database` over psycopg2, with the catalog's schema
    as its search path (so the catalog's SQL names its tables plainly)."""

    def __init__(self, url: str, schema: str):
        import psycopg2
        from sqlalchemy.engine import make_url

        parts = make_url(url)  # the instance's URL (postgresql+psycopg2://...)
        self.raw = psycopg2.connect(
            host=parts.host, port=parts.port, user=parts.username, password=parts.password,
            dbname=parts.database, **{k: str(v) for k, v in parts.query.items()},
        )  # fmt: skip
        self.raw.autocommit = True  # transactions explicit, as with SQLite
        self.schema = schema
        self.lock_key = int.from_bytes(
            hashlib.sha256(schema.encode()).digest()[:8], "big", signed=True
        )
        self._changes = 0
        self.execute(f'SET search_path TO "{schema}"')  # the name is ours: [a-z0-9_]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.raw.cursor()
        cursor.execute(_pg(sql), tuple(params) or None)
        if _writes(sql):
            self._changes += max(cursor.rowcount, 0)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        from psycopg2.extras import execute_batch, execute_values

        rows = list(rows)
        if not rows:
            return
        with self.raw.cursor() as cursor:
            insert = _INSERT_VALUES.fullmatch(sql)
            if insert:  # one statement of many rows: several times faster than one a row
                statement = insert["head"] + "%s" + _pg(insert["tail"])
                execute_values(cursor, statement, rows, page_size=BATCH_ROWS)
            else:
                execute_batch(cursor, _pg(sql), rows, page_size=BATCH_ROWS)
        self._changes += len(rows)  # each of the catalog's batched statements: one row

    def begin(self, write: bool) -> None:
        # reads see one snapshot across their statements, as in SQLite
        self.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @property
    def total_changes(self) -> int:
        return self._changes

    @contextlib.contextmanager
    def registering(self) -> Iterator[None]:
        self.execute("SELECT pg_advisory_lock(?)", (self.lock_key,))
        try:
            yield
        finally:
            self.execute("SELECT pg_advisory_unlock(?)", (self.lock_key,))

    def close(self) -> None:
        self.raw.close()


_INSERT_VALUES = re.compile(r"(?P<head>INSERT INTO .+? VALUES )\(\?(?:, \?)*\)(?P<tail>.*)", re.S)
"""An ``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` of the catalog: its rows can go as
one multi-row ``VALUES`` list (every batch the catalog writes has each key once)."""


def _pg(sql: str) -> str:
    """The catalog's SQL with psycopg2's parameter marks (it has no literal ``?`` or ``%``)."""
    return sql.replace("?", "%s")


def _writes(sql: str) -> bool:
    return sql.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")


def schema_name(output_dir: Path, create: bool) -> str | None:
    """The output dir's catalog schema (``catalog.postgres.json``); a new one is drawn
    when ``create`` and there is none (call under the catalog's lock)."""
    path = Path(output_dir) / SCHEMA_FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["schema"])
    except FileNotFoundError:
        if not create:
            return None
    schema = f"dpl_catalog_{uuid.uuid4().hex[:16]}"
    atomic_write_text(path, json.dumps({"schema": schema}))
    return schema


def open_catalog(
    output_dir: Path,
    url: str,
    create: bool,
    locked: Callable[[], contextlib.AbstractContextManager[None]],
) -> PostgresDatabase | None:
    """A connection to the output dir's catalog in PostgreSQL at ``url``; None when there
    is none and not ``create`` (nor an older catalog to import). Creates the schema and
    tables (importing ``catalog.sqlite`` or ``catalog.json``) under ``locked()``.
    Raises :class:`json.JSONDecodeError` when that ``catalog.json`` is not JSON."""
    output_dir = Path(output_dir)
    olds = [output_dir / catalog_db.DB_NAME, output_dir / catalog_db.JSON_NAME]
    schema = schema_name(output_dir, create=False)
    if schema is not None and not any(old.exists() for old in olds):
        db = PostgresDatabase(url, schema)
        if db.execute("SELECT to_regclass('meta')").fetchone()[0] is not None:
            return db  # the usual case: one query to see the tables are there
        db.close()
    if not (create or any(old.exists() for old in olds)):
        return None
    with locked():
        schema = schema_name(output_dir, create=True)
        assert schema is not None
        db = PostgresDatabase(url, schema)
        with catalog_db.transaction(db):
            db.execute("SELECT pg_advisory_xact_lock(?)", (db.lock_key,))  # other machines
            db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            db.execute(TABLES)
        old = next((path for path in olds if path.exists()), None)
        if old is not None:
            empty = db.execute("SELECT count(*) FROM videos").fetchone()[0] == 0
            if empty:  # else imported already (a crash came before the rename)
                catalog_db.migrate_json(db, _contents(old))
            for path in olds:
                if path.exists():
                    catalog_db.set_aside(path)
    return db


def _contents(old: Path) -> dict:
    """An older catalog's contents in ``catalog.json``'s layout."""
    if old.name == catalog_db.JSON_NAME:
        return catalog_db.read_json(old)
    source = catalog_db.connect(old)
    try:
        return catalog_db.export(source)
    finally:
        source.close()
