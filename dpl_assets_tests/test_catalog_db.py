"""The catalog's database: per-row writes, concurrent writers, migration of ``catalog.json``;
in SQLite (the default) and in PostgreSQL (an output dir whose instance stores there: a
throwaway server on 127.0.0.1, the instance's dagster.yaml as ``dpl init-instance
--postgres`` writes it)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import psycopg2
import pytest

from dpl_assets.catalog import Catalog, fingerprint
from dpl_assets.catalog_pg import SCHEMA_FILE
from dpl_assets.cli import instance_config
from dpl_assets.discovery import parse_inputs
from dpl_assets_tests import servers


@pytest.fixture(scope="module")
def pg_server():
    with servers.postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, monkeypatch) -> str:
    """Where the catalogs of :func:`output_dir` live; DAGSTER_PG_* set for PostgreSQL."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    if request.param == "postgres":
        for name, value in request.getfixturevalue("pg_server").env().items():
            monkeypatch.setenv(name, value)
    return request.param


def output_dir(path: Path, backend: str) -> Path:
    """An output dir whose instance (``.dagster/dagster.yaml``) stores in ``backend``."""
    (path / ".dagster").mkdir(parents=True, exist_ok=True)
    config = instance_config(postgres=backend == "postgres")
    (path / ".dagster" / "dagster.yaml").write_text(config, encoding="utf-8")
    return path


def pg_tables(server, out: Path) -> dict[str, int]:
    """Rows per table of ``out``'s catalog schema, read with psycopg2 directly."""
    schema = json.loads((out / SCHEMA_FILE).read_text())["schema"]
    with psycopg2.connect(host="127.0.0.1", port=server.port, user="dagster",
                          dbname="dagster") as connection:  # fmt: skip
        cursor = connection.cursor()
        counts = {}
        for table in ("videos", "sources", "fingerprints", "refused", "meta"):
            cursor.execute(f'SELECT count(*) FROM "{schema}".{table}')  # names: ours
            counts[table] = cursor.fetchone()[0]
    return counts


def make_videos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.mp4").write_bytes(b"stand-in " + name.encode())


def rows_written(catalog: Catalog, action) -> int:
    """The rows inserted, updated or deleted by ``action()`` on the catalog's connection."""
    conn = catalog._conn(create=True)
    assert conn is not None
    before = conn.total_changes
    action()
    return conn.total_changes - before


def test_a_scan_writes_only_the_rows_that_changed(tmp_path, backend):
    videos = tmp_path / "videos"
    make_videos(videos, [f"clip{i:03d}" for i in range(200)])
    inputs = parse_inputs({"video": str(videos)})
    catalog = Catalog(output_dir(tmp_path / "out", backend))
    first = rows_written(catalog, lambda: catalog.register(inputs))
    assert first >= 200 * 3  # a video, its source and its fingerprint each

    assert rows_written(catalog, lambda: catalog.register(inputs)) == 0  # unchanged: nothing

    (videos / "clip007.mp4").write_bytes(b"new content, longer")
    changed = []
    assert rows_written(catalog, lambda: changed.append(catalog.register(inputs))) == 1
    assert changed[0].changed_ids == ["clip007"]

    make_videos(videos, ["late"])
    assert rows_written(catalog, lambda: catalog.register(inputs)) == 3  # video, source, print

    (videos / "clip011.mp4").unlink()
    assert rows_written(catalog, lambda: catalog.register(inputs)) == 1  # the removed mark
    assert "clip011" not in Catalog(tmp_path / "out").entries()
    assert "clip011" in Catalog(tmp_path / "out").entries(include_removed=True)

    catalog.save_graph([{"name": "VideoToWavNode", "params": {}}])
    assert rows_written(catalog, lambda: catalog.save_graph(catalog.saved_graph() or [])) == 0


def _register_many(out: str, videos: str, prefix: str, rounds: int) -> None:
    """One writer process: add a file, register, repeat (a fresh Catalog each time)."""
    for index in range(rounds):
        make_videos(Path(videos), [f"{prefix}{index:02d}"])
        Catalog(out).register(parse_inputs({"video": videos}))


def test_processes_registering_at_once_leave_a_consistent_catalog(tmp_path, backend):
    videos, out = tmp_path / "videos", output_dir(tmp_path / "out", backend)
    make_videos(videos, ["old"])
    # an output dir from before the database: the writers race to migrate it
    (out / "catalog.json").write_text(json.dumps(old_catalog_json(videos, ["old"])))
    spawn = multiprocessing.get_context("spawn")
    writers = [
        spawn.Process(target=_register_many, args=(str(out), str(videos), prefix, 15))
        for prefix in ("a", "b", "c")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=300)
        assert writer.exitcode == 0

    entries = Catalog(out).entries()
    paths = [entry.sources["video"] for entry in entries.values()]
    assert sorted(paths) == sorted(str(p) for p in videos.glob("*.mp4"))  # each file, once
    assert len(entries) == 1 + 3 * 15 and next(iter(entries)) == "old"  # order kept
    again = Catalog(out).register(parse_inputs({"video": str(videos)}))
    assert again.new_ids == [] and again.changed_ids == []
    assert not (out / "catalog.json").exists() and (out / "catalog.json.migrated").exists()


def old_catalog_json(videos: Path, names: list[str]) -> dict:
    """A ``catalog.json`` as the code before the database wrote it (same keys, same order)."""
    entries = {}
    for name in names:
        path = videos / f"{name}.mp4"
        entries[name] = {
            "stem": name,
            "sources": {"video": str(path)},
            "fingerprints": {"video": fingerprint(path)},
        }
    return {"videos": entries, "inputs": parse_inputs({"video": str(videos)}).to_json()}


def test_an_existing_catalog_json_is_migrated_on_first_open(tmp_path, backend):
    videos, out = tmp_path / "videos", output_dir(tmp_path / "out", backend)
    make_videos(videos, ["b_first", "a_second", "gone"])
    data = old_catalog_json(videos, ["b_first", "a_second", "gone"])
    data["videos"]["gone"]["removed"] = True
    (videos / "gone.mp4").unlink()
    data["refused"] = [
        {"video_id": "link", "datatype": "video", "path": str(videos / "link.mp4"),
         "reason": "a symbolic link"},
    ]  # fmt: skip
    data["graph"] = [{"name": "VideoToWavNode", "params": {}}]
    (out / "catalog.json").write_text(json.dumps(data, indent=1), encoding="utf-8")

    catalog = Catalog(out)
    assert list(catalog.entries()) == ["b_first", "a_second"]  # registration order kept
    assert catalog.entry("gone").sources["video"] == str(videos / "gone.mp4")
    assert catalog.saved_graph() == data["graph"]
    assert catalog.saved_inputs() == data["inputs"]
    assert [vars(entry) for entry in catalog.refused()] == data["refused"]
    assert catalog.snapshot() == data
    assert not (out / "catalog.json").exists()
    assert json.loads((out / "catalog.json.migrated").read_text()) == data  # kept, renamed

    registration = []
    written = rows_written(
        catalog, lambda: registration.append(catalog.register(parse_inputs({"video": str(videos)})))
    )
    # The fingerprints came along: nothing looks new or changed; the one row written is
    # the refused link, gone from the folder (it was never there).
    assert written == 1 and catalog.refused() == []
    assert registration[0].new_ids == registration[0].changed_ids == []


def test_an_empty_catalog_json_migrates_to_an_empty_catalog(tmp_path, backend):
    out = output_dir(tmp_path, backend)
    (out / "catalog.json").write_text("{}")
    catalog = Catalog(out)
    assert catalog.entries() == {} and catalog.saved_graph() is None
    assert catalog.refused() == [] and (out / "catalog.json.migrated").exists()
    assert (out / "catalog.sqlite").exists() == (backend == "sqlite")


def test_reading_a_missing_catalog_creates_nothing(tmp_path, backend):
    catalog = Catalog(tmp_path / "out")
    assert catalog.entries() == {} and catalog.saved_inputs() is None
    assert not (tmp_path / "out").exists()
    out = output_dir(tmp_path / "out", backend)
    assert Catalog(out).entries() == {} and sorted(p.name for p in out.iterdir()) == [".dagster"]


def test_a_sqlite_catalog_moves_to_postgres_when_the_instance_does(
    tmp_path, monkeypatch, pg_server
):
    """An output dir run on SQLite, then given a Postgres instance: its catalog is imported
    once (order, removed marks, fingerprints, graph, inputs), the file kept aside; a second
    output dir on the same server gets tables of its own."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for name, value in pg_server.env().items():
        monkeypatch.setenv(name, value)
    videos, out = tmp_path / "videos", output_dir(tmp_path / "out", "sqlite")
    make_videos(videos, ["b", "a", "gone"])
    inputs = parse_inputs({"video": str(videos)})
    Catalog(out).register(inputs)
    (videos / "gone.mp4").unlink()
    Catalog(out).register(inputs)
    Catalog(out).save_graph([{"name": "VideoToWavNode", "params": {}}])
    before = Catalog(out).snapshot()
    assert before["videos"]["gone"]["removed"] is True

    output_dir(out, "postgres")  # `dpl init-instance --postgres --force`, say
    moved = Catalog(out)
    order = [vid for vid in before["videos"] if vid != "gone"]
    assert moved.snapshot() == before and list(moved.entries()) == order
    assert not (out / "catalog.sqlite").exists() and (out / "catalog.sqlite.migrated").exists()
    assert pg_tables(pg_server, out) == {
        "videos": 3, "sources": 3, "fingerprints": 3, "refused": 0, "meta": 2
    }  # fmt: skip
    again = moved.register(inputs)  # fingerprints came along: nothing new or changed
    assert (again.new_ids, again.changed_ids, again.removed_ids) == ([], [], [])

    other = output_dir(tmp_path / "other", "postgres")
    make_videos(tmp_path / "videos2", ["x"])
    assert Catalog(other).register(parse_inputs({"video": str(tmp_path / "videos2")})).new_ids
    assert list(Catalog(other).entries()) == ["x"] and list(Catalog(out).entries()) == order
    assert (other / SCHEMA_FILE).read_text() != (out / SCHEMA_FILE).read_text()
    assert not (other / "catalog.sqlite").exists()


def _list_entries(catalog: Catalog, expected: list[str]) -> None:
    if list(catalog.entries()) != expected:
        raise SystemExit(1)


def test_a_forked_process_leaves_the_parents_connection_working(tmp_path, backend):
    """A process forked after the catalog was opened (Celery's prefork pool, say) opens its
    own connection; the parent's keeps working (psycopg2 does not end the session of a
    connection it inherited when dropping it)."""
    videos = tmp_path / "videos"
    make_videos(videos, ["a", "b"])
    catalog = Catalog(output_dir(tmp_path / "out", backend))
    catalog.register(parse_inputs({"video": str(videos)}))
    assert list(catalog.entries()) == ["a", "b"]
    child = multiprocessing.get_context("fork").Process(
        target=_list_entries, args=(catalog, ["a", "b"])
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert list(catalog.entries()) == ["a", "b"]  # the parent's connection, still usable
