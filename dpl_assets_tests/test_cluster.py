"""Postgres instance storage and Celery workers, on real servers started here.

A throwaway PostgreSQL cluster and redis-server on 127.0.0.1 (``servers.py``), one
database per test; Celery workers are separate processes (``celery -A
dpl_assets.celery_worker worker``), one on the ``cpu`` queue and one on the ``gpu`` queue,
sharing the test's output dir. References: ``dpl run`` in process on the same inputs (its
arrays, images and report), and the instance's own records.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import dagster as dg
import h5py
import numpy as np
import psycopg2
import pytest
import soundfile

from dpl_assets import cli
from dpl_assets.automation import backfill_schedule
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets_tests import media_factory as media
from dpl_assets_tests import servers
from dpl_assets_tests.test_automation import GRAPH, execute, tick
from dpl_assets_tests.test_pipeline import instance_for
from dpl_assets_tests.tiny_wav2vec import build_tiny_wav2vec

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pg():
    with servers.postgres() as server:
        yield server


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with servers.redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


_databases = iter(range(1000))


def new_database(pg) -> dict[str, str]:
    """A new database on the module's server; its DAGSTER_PG_* variables."""
    name = f"test_{next(_databases)}"
    connection = psycopg2.connect(host="127.0.0.1", port=pg.port, user="dagster", dbname="dagster")
    try:
        connection.autocommit = True
        connection.cursor().execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return pg.env(name)


@pytest.fixture
def pg_env(pg, monkeypatch) -> dict[str, str]:
    """A database of this test's own, in DAGSTER_PG_*."""
    env = new_database(pg)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def init_postgres(out: Path) -> None:
    assert cli.main(["init-instance", "--output_dir", str(out), "--postgres"]) == 0


def test_init_instance_writes_postgres_config_and_keeps_an_existing_one(tmp_path):
    out = tmp_path / "out"
    init_postgres(out)
    text = (out / ".dagster" / "dagster.yaml").read_text()
    assert "postgres_db:" in text and "DAGSTER_PG_HOST" in text and "max_concurrent_runs" in text
    assert cli.main(["init-instance", "--output_dir", str(out)]) == 2  # exists: kept
    assert "postgres_db:" in (out / ".dagster" / "dagster.yaml").read_text()
    assert cli.main(["init-instance", "--output_dir", str(out), "--force"]) == 0
    assert "postgres_db:" not in (out / ".dagster" / "dagster.yaml").read_text()


def test_pipeline_sensor_and_backfill_on_postgres(tmp_path, pg_env, monkeypatch):
    videos = tmp_path / "videos"
    media.make_talking_clip(videos / "a.mp4", seconds=1.0)
    media.make_talking_clip(videos / "b.mp4", seconds=1.0)
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    init_postgres(out)
    arguments = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                 str(tmp_path / "inputs.json"), "--output_dir", str(out)]  # fmt: skip
    assert cli.main(arguments) == 0
    instance = instance_for(out)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert not list((out / ".dagster").glob("**/*.db"))  # no SQLite database beside it
    port, db = int(pg_env["DAGSTER_PG_PORT"]), pg_env["DAGSTER_PG_DB"]
    with psycopg2.connect(host="127.0.0.1", port=port, user="dagster", dbname=db) as connection:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM runs")
        assert cursor.fetchone()[0] >= 1  # the runs are in Postgres
        cursor.execute("SELECT count(*) FROM dynamic_partitions WHERE partitions_def_name = %s",
                       (VIDEOS_PARTITION_NAME,))  # fmt: skip
        assert cursor.fetchone()[0] == 2
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["processed"] == 2
    runs = len(instance.get_runs())
    assert cli.main(arguments) == 0  # a second run finds everything done: no run
    assert len(instance.get_runs()) == runs

    # The sensor as the daemon evaluates it, against the Postgres instance.
    monkeypatch.setenv("DPL_OUTPUT_DIR", str(out))
    monkeypatch.setenv("DPL_SENSOR_SETTLE_S", "0")
    first = tick(instance, None)
    assert first.run_requests == []
    media.make_talking_clip(videos / "c.mp4", seconds=1.0)
    [request] = tick(instance, first.cursor).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "c"
    execute(request, out, instance)
    assert (out / "volume" / "c.npy").exists()
    assert list(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME)) == ["a", "b", "c"]

    # The backfill schedule and `dpl backfill`.
    (out / "volume" / "b.npy").unlink()
    [request] = backfill_schedule(dg.build_schedule_context(instance=instance))
    assert request.tags["dagster/asset_partition_range_start"] == "b"
    execute(request, out, instance)
    assert (out / "volume" / "b.npy").exists()
    (out / "wav" / "a.wav").unlink()
    assert cli.main(["backfill", "--output_dir", str(out)]) == 0
    assert soundfile.info(out / "wav" / "a.wav").frames == 16000
    videos = json.loads((out / "report.json").read_text())["videos"]
    statuses = {video["video_id"]: video["status"] for video in videos}
    assert statuses == {"a": "processed", "b": "processed", "c": "processed"}


# -- Celery ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    return build_tiny_wav2vec(tmp_path_factory.mktemp("w2v"), "group")


@pytest.fixture(scope="module")
def celery_db(pg) -> dict[str, str]:
    """The database of the Celery tests: the workers open the instances with these
    DAGSTER_PG_* variables, so every Celery test's instance uses it."""
    return new_database(pg)


@pytest.fixture(scope="module")
def workers(broker, celery_db, tmp_path_factory):
    """Two Celery workers (one pool process each): ``cpu`` and ``gpu`` queues."""
    folder = tmp_path_factory.mktemp("workers")
    env = {**broker.env(), **celery_db, "PYTHONPATH": str(REPO), "DPL_THREADS": "1"}
    started = [
        servers.start_worker("cpu", ["cpu"], env, folder),
        servers.start_worker("gpu", ["gpu"], env, folder),
    ]
    try:
        for worker in started:
            servers.wait_ready(worker)
        yield {worker.name: worker for worker in started}
    finally:
        for worker in started:
            servers.stop_worker(worker)


@pytest.fixture
def celery_env(broker, celery_db, monkeypatch) -> None:
    """This process's environment as the workers': broker, backend, database."""
    for key, value in {**broker.env(), **celery_db}.items():
        monkeypatch.setenv(key, value)


def compare_outputs(reference: Path, other: Path) -> list[str]:
    """Every output file of ``reference`` (not the instance, catalog, report, locks) has
    its twin in ``other`` with equal content: arrays, decoded images, wav samples, HDF5
    datasets, JSON; other files byte for byte. Returns the files compared."""
    compared = []
    for path in sorted(reference.rglob("*")):
        relative = path.relative_to(reference)
        if not path.is_file() or relative.parts[0] in (".dagster", "_claims", "_index"):
            continue
        if path.name.startswith(("catalog.", "report.")) or path.name.endswith(".lock"):
            continue
        twin = other / relative
        assert twin.is_file(), f"{relative} missing from the Celery run"
        suffix = path.suffix.lower()
        if suffix == ".npy":
            np.testing.assert_array_equal(np.load(path), np.load(twin), err_msg=str(relative))
        elif suffix in (".png", ".jpg", ".jpeg"):
            a, b = (
                cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
                cv2.imread(str(twin), cv2.IMREAD_UNCHANGED),
            )
            np.testing.assert_array_equal(a, b, err_msg=str(relative))  # fmt: skip
        elif suffix == ".wav":
            np.testing.assert_array_equal(soundfile.read(path)[0], soundfile.read(twin)[0])
        elif suffix in (".h5", ".hdf5"):
            with h5py.File(path) as a, h5py.File(twin) as b:
                names: list[str] = []
                a.visit(names.append)
                for name in names:
                    if isinstance(a[name], h5py.Dataset):
                        _assert_dataset_equal(a[name][()], b[name][()], f"{relative}:{name}")
        elif suffix == ".json":
            assert _relative(json.loads(path.read_text()), reference) == _relative(
                json.loads(twin.read_text()), other
            ), str(relative)
        else:
            assert path.read_bytes() == twin.read_bytes(), str(relative)
        compared.append(str(relative))
    return compared


def _assert_dataset_equal(a, b, what: str) -> None:
    """Equal HDF5 dataset values; a variable-length one (JPEG frames) item by item."""
    if isinstance(a, np.ndarray) and a.dtype == object:
        assert len(a) == len(b), what
        for index, (x, y) in enumerate(zip(a.flat, b.flat, strict=True)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what}[{index}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def _relative(value, root: Path):
    """``value`` with ``root`` taken out of its strings (outputs name their paths), without
    the ``time`` a record was written at, and a pack index's fingerprint of its source
    file (size, mtime in ns) as its size alone."""
    if isinstance(value, dict):
        return {
            k: v[0] if k == "source" and isinstance(v, list) else _relative(v, root)
            for k, v in value.items()
            if k != "time"
        }
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    return value.replace(str(root), "OUT") if isinstance(value, str) else value


def steps_by_worker(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it (the engine events of the run)."""
    where = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.is_engine_event or record.step_key is None:
            continue
        worker = event.engine_event_data.metadata.get("Celery worker")
        if worker is not None:
            where[record.step_key] = worker.value.split("@")[0]
    return where


def run_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
            str(tmp_path / "inputs.json"), "--output_dir", str(out), *extra]  # fmt: skip


def test_celery_run_routes_steps_and_equals_the_run_in_process(tmp_path, celery_env, workers, w2v):
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "VolumeNode", "params": {}},
        {"name": "VideoToImagesNode", "params": {"fps": 25}},
        {"name": "Wav2vecNode", "params": {"checkpoint": str(w2v), "device": "auto"}},
        {"name": "H5DatasetNode", "params": {"datatypes": ["wav2vec", "volume"]}},
    ]
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    videos = tmp_path / "videos"
    media.make_talking_clip(videos / "one.mp4", seconds=1.0)
    media.make_talking_clip(videos / "two.mp4", seconds=1.5)
    (videos / "empty.mp4").write_bytes(b"")
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))

    local = tmp_path / "local"
    assert cli.main(run_args(tmp_path, local)) == 0
    cluster = tmp_path / "cluster"
    init_postgres(cluster)
    assert cli.main(run_args(tmp_path, cluster, "--executor", "celery")) == 0

    ref = json.loads((local / "report.json").read_text())
    got = json.loads((cluster / "report.json").read_text())
    assert got["summary"] == ref["summary"] == {
        "processed": 2, "rejected": 1, "failed": 0, "failed_checks": 0
    }  # fmt: skip
    assert _relative(got, cluster) == _relative(ref, local)
    compared = compare_outputs(local, cluster)
    assert {"wav2vec/one.npy", "volume/two.npy", "wav/one.wav", "h5_dataset/two.h5"} <= set(
        compared
    )

    instance = instance_for(cluster)
    [run] = instance.get_runs(dg.RunsFilter(tags={"dpl/launched_by": "dpl run (celery)"}),
                              limit=1)  # fmt: skip
    assert run.status == dg.DagsterRunStatus.SUCCESS
    where = steps_by_worker(instance, run.run_id)
    assert where["wav2vec"] == "gpu"  # the gpu pool's asset on the gpu queue
    assert {where[step] for step in where if step != "wav2vec"} == {"cpu"}
    assert {"wav", "volume", "h5_dataset"} <= set(where)


def test_a_worker_killed_mid_step_loses_nothing_and_the_step_runs_again(
    tmp_path, celery_env, workers
):
    marker = tmp_path / "started"
    graph = [
        {"name": "VideoToWavNode", "params": {}},
        {"name": "dpl_assets_tests.custom_slow_example:SlowNode",
         "params": {"marker": str(marker), "seconds": 3.0}},
    ]  # fmt: skip
    (tmp_path / "graph.json").write_text(json.dumps(graph))
    media.make_talking_clip(tmp_path / "videos" / "v1.mp4", seconds=1.0)
    media.make_talking_clip(tmp_path / "videos" / "v2.mp4", seconds=1.0)
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    init_postgres(out)
    import threading

    codes = []
    thread = threading.Thread(
        target=lambda: codes.append(cli.main(run_args(tmp_path, out, "--executor", "celery")))
    )
    thread.start()
    deadline = time.monotonic() + 180
    started: list[list[str]] = []
    while len(started) < 2 and time.monotonic() < deadline:  # v1 done, v2 being computed
        time.sleep(0.2)
        started = (
            [line.split() for line in marker.read_text().splitlines()] if marker.exists() else []
        )
    assert [video for _, video in started] == ["v1", "v2"], workers["cpu"].log.read_text()[-3000:]
    pid = int(started[0][0])
    assert pid in workers["cpu"].child_pids()  # the step runs in the worker's pool process
    assert (out / "wav_samples" / "v1.npy").exists()
    os.kill(pid, signal.SIGKILL)  # as the OOM killer would
    thread.join(240)
    assert codes == [0]
    for video in ("v1", "v2"):
        assert np.load(out / "wav_samples" / f"{video}.npy").tolist() == [16000]
    assert not list(out.rglob(".tmp-*"))  # no partial file left
    again = [line.split() for line in marker.read_text().splitlines()][2:]
    assert [video for _, video in again] == ["v2"]  # v1 was kept; v2 computed again
    assert again[0][0] != str(pid)  # by a new pool process


def test_cluster_demo_script_equals_dpl_run_in_process(tmp_path):
    """scripts/cluster_demo.sh as a user runs it (its own PostgreSQL, Redis, workers,
    webserver and daemon), then the same graph and media in process: same report, same
    outputs. Everything the script started is gone afterwards."""
    import subprocess

    if servers.postgres_bin() is None or shutil.which("redis-server") is None:
        pytest.skip("PostgreSQL or redis-server not installed (bash scripts/setup.sh --tests)")
    out, media_folder = tmp_path / "cluster_demo_output", tmp_path / "media"
    env = {**os.environ, "DPL_DEMO_OUTPUT": str(out), "DPL_DEMO_MEDIA": str(media_folder)}
    for key in [key for key in env if key.startswith(("DAGSTER_", "DPL_CELERY", "DPL_EXEC"))]:
        del env[key]
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster_demo.sh")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert '{"processed": 3, "rejected": 2, "failed": 0, "failed_checks": 0}' in done.stdout
    assert "Celery workers cpu and gpu ready" in done.stderr
    assert "steps on Celery workers" in done.stderr
    assert not list(Path("/tmp").glob("dpl-cluster-demo.*"))  # its servers' folder removed

    local = tmp_path / "local"
    graph = REPO / "dpl_assets" / "configs" / "default.json"
    inputs = media_folder / "inputs.json"
    arguments = ["run", "--graph", str(graph), "--inputs", str(inputs), "--output_dir", str(local)]
    assert cli.main(arguments) == 0
    ref = json.loads((local / "report.json").read_text())
    got = json.loads((out / "report.json").read_text())
    assert _relative(got, out) == _relative(ref, local)
    compared = compare_outputs(local, out)
    assert any(path.startswith("contact_sheet/") for path in compared)
    assert any(path.startswith("crops/") for path in compared)
