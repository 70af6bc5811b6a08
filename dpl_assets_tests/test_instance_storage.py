"""The pooled SQLite event log of ``dpl``'s instances (:mod:`dpl_assets.instance_storage`):
the same databases as Dagster's own class (checked by reading them with it), events kept
when the writing process is killed, a bounded number of open databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from dpl_assets import cli
from dpl_assets.instance_storage import (
    OPEN_RUN_DATABASES,
    DplInstance,
    PooledSqliteEventLogStorage,
)
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets_tests import media_factory as media

CHEAP_GRAPH = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]


def _materialization(run_id: str, partition: str) -> EventLogEntry:
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="job",
        event_specific_data=StepMaterializationData(
            dg.AssetMaterialization(asset_key="wav", partition=partition)
        ),
    )
    return EventLogEntry(
        error_info=None,
        level=20,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        step_key="wav",
        job_name="job",
        dagster_event=event,
    )


def _dagster_default_instance(home: Path, tmp_path: Path) -> dg.DagsterInstance:
    """Dagster's own instance class and storage on ``home``'s databases (a config dir
    without ``instance_class``)."""
    config_dir = tmp_path / "plain_config"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))


def _materialized_partitions(instance: dg.DagsterInstance, key: str) -> list[str]:
    records = instance.fetch_materializations(dg.AssetKey(key), limit=1000).records
    return sorted(str(record.partition_key) for record in records)


def test_dpl_instances_use_the_pooled_event_log_on_dagsters_files(tmp_path):
    videos = tmp_path / "in" / "videos"
    for name in ("a", "b", "c"):
        media.make_talking_clip(videos / f"{name}.mp4", seconds=1.0)
    (tmp_path / "in" / "inputs.json").write_text(json.dumps({"video": "videos"}))
    (tmp_path / "graph.json").write_text(json.dumps(CHEAP_GRAPH))
    out = tmp_path / "out"
    code = cli.main(
        ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
         str(tmp_path / "in" / "inputs.json"), "--output_dir", str(out)]
    )  # fmt: skip
    assert code == 0
    home = out / INSTANCE_SUBDIR
    with dg.DagsterInstance.from_config(str(home)) as ours:
        assert isinstance(ours, DplInstance)
        assert isinstance(ours.event_log_storage, PooledSqliteEventLogStorage)
        assert ours.event_log_storage._base_dir == str(home / "history" / "runs")
        expected = ["a", "b", "c"]
        assert _materialized_partitions(ours, "wav") == expected
    # Dagster's own class reads the same databases (and the files are where it puts them).
    with _dagster_default_instance(home, tmp_path) as plain:
        assert type(plain.event_log_storage) is SqliteEventLogStorage
        assert _materialized_partitions(plain, "wav") == expected
        assert _materialized_partitions(plain, "volume") == expected
        (run,) = plain.get_runs()
        assert run.is_success


def test_connections_run_with_synchronous_normal(tmp_path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    with storage.index_connection() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    storage.dispose()


def test_open_run_databases_are_bounded_and_all_events_kept(tmp_path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    runs = [f"run{i}" for i in range(OPEN_RUN_DATABASES + 3)]
    for index, run_id in enumerate(runs):
        for partition in range(index + 1):
            storage.store_event(_materialization(run_id, f"v{partition}"))
        assert len([name for name in storage._engines if name != "index"]) <= OPEN_RUN_DATABASES
    for index, run_id in enumerate(runs):  # the closed ones open again
        assert len(storage.get_records_for_run(run_id).records) == index + 1
    plain = SqliteEventLogStorage(str(tmp_path / "runs"))
    assert [len(plain.get_records_for_run(run_id).records) for run_id in runs] == list(
        range(1, len(runs) + 1)
    )
    storage.wipe()  # deletes the run databases: their engines are closed first
    assert storage.get_records_for_run(runs[0]).records == []
    storage.dispose()
    plain.dispose()


def test_tables_found_are_not_looked_up_again(tmp_path, monkeypatch):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "runs"))
    lookups: list[str] = []
    base_has_table = SqliteEventLogStorage.has_table

    def counted(self, table_name):
        lookups.append(table_name)
        return base_has_table(self, table_name)

    monkeypatch.setattr(SqliteEventLogStorage, "has_table", counted)
    assert storage.has_table("dynamic_partitions") and storage.has_table("dynamic_partitions")
    assert not storage.has_table("no_such_table") and not storage.has_table("no_such_table")
    assert lookups == ["dynamic_partitions", "no_such_table", "no_such_table"]  # absent: asked
    storage.add_dynamic_partitions("videos", ["a", "b"])
    for _ in range(5):
        assert storage.get_dynamic_partitions("videos") == ["a", "b"]
        assert storage.has_dynamic_partition("videos", "b")
    assert lookups.count("dynamic_partitions") == 1
    storage.wipe()  # forgets what it found: the tables are looked up again after
    assert storage.has_table("dynamic_partitions")
    assert lookups.count("dynamic_partitions") == 2
    storage.dispose()


KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_instance_storage import _materialization
from dpl_assets.instance_storage import PooledSqliteEventLogStorage
storage = PooledSqliteEventLogStorage({base!r})
for i in range({count}):
    storage.store_event(_materialization("killed", f"v{{i}}"))
print("stored", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL of a child")
def test_events_survive_a_killed_writer(tmp_path):
    base = str(tmp_path / "runs")
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), base=base, count=25)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "stored" in done.stdout
    plain = SqliteEventLogStorage(base)
    records = plain.get_records_for_run("killed").records
    partitions = sorted(record.event_log_entry.dagster_event.partition for record in records)
    assert partitions == sorted(f"v{i}" for i in range(25))
    plain.dispose()
