"""Benchmark: the new-video sensor, the catalog and the UI at scale, and a no-op rerun.

- Sensor: ``--videos`` small stand-in files (16 bytes each, 100 per folder; the sensor only
  walks, stats and registers them) under one input root, a persistent instance (SQLite in
  the output dir, or PostgreSQL with ``--postgres-url``). Times the first tick (registers
  everything, adds the partitions), a steady tick (nothing changed), and a tick after
  ``--new`` new files and ``--changed`` changed ones (each split into the catalog sync and
  the partition update), the catalog's size, and with ``--ui`` the Dagster UI's partition
  data for one asset (the GraphQL query of its partitions page, timed against a real
  ``dagster-webserver`` on 127.0.0.1).
- Rerun: ``--materialized`` videos registered and with their ``probe``, ``wav`` and
  ``volume`` artefacts present (written directly, so no decoding is timed); times ``dpl
  run``'s path with report.json written: once to build the report's entries (the first
  report), then three times with nothing new, each split into the catalog scan, the
  temp-file sweep, the pending check, the report's entries and writing report.json.

    .venv/bin/python benchmarks/automation.py --videos 10000 100000 --materialized 1000
    .venv/bin/python benchmarks/automation.py --videos 1000000 --new 1000 --changed 100 --ui
    .venv/bin/python benchmarks/automation.py --videos --materialized 1000000 \
        --scratch /tmp/scale_noop --report noop.json     # the no-op rerun alone
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import soundfile

from dpl_assets import automation, runner
from dpl_assets.automation import new_videos_sensor
from dpl_assets.discovery import parse_inputs
from dpl_assets.graph import plan_graph
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.runner import register_videos, run_plan
from dpl_assets.storage.store import ArtifactStore

GRAPH = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]
REPO = Path(__file__).resolve().parents[1]


def make_files(root: Path, count: int, start: int = 0, empty: bool = False) -> None:
    """``count`` stand-in videos, 100 per folder; ``empty``: of 0 bytes (no data block)."""
    for index in range(start, start + count):
        folder = root / f"speaker{index // 100:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        content = b"" if empty else b"stand-in %08d" % index
        (folder / f"take{index % 100:02d}.mp4").write_bytes(content)


def instance_at(folder: Path, postgres_url: str | None = None) -> dg.DagsterInstance:
    """A persistent instance in ``folder``: SQLite there, or ``postgres_url``'s database."""
    folder.mkdir(parents=True, exist_ok=True)
    config = "telemetry:\n  enabled: false\n"
    if postgres_url:
        config += f"storage:\n  postgres:\n    postgres_url: {json.dumps(postgres_url)}\n"
    (folder / "dagster.yaml").write_text(config)
    return dg.DagsterInstance.from_config(str(folder))


def fresh_database(postgres_url: str, name: str) -> str:
    """``postgres_url`` pointed at a new, empty database ``name`` (dropped first if there)."""
    import psycopg2  # dagster-postgres's driver

    connection = psycopg2.connect(postgres_url.replace("postgresql+psycopg2://", "postgresql://"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')  # name: ours, not user input
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    base, _, _ = postgres_url.rpartition("/")
    return f"{base}/{name}"


def catalog_bytes(out: Path, postgres_url: str | None) -> int:
    """The catalog's size: its SQLite files, or its schema's tables in PostgreSQL."""
    if postgres_url is None:
        return sum(p.stat().st_size for p in out.glob("catalog.sqlite*"))
    import psycopg2

    schema = json.loads((out / "catalog.postgres.json").read_text())["schema"]
    connection = psycopg2.connect(postgres_url.replace("postgresql+psycopg2://", "postgresql://"))
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_total_relation_size(format('%%I.%%I', schemaname, tablename))) "
            "FROM pg_tables WHERE schemaname = %s",
            (schema,),
        )
        size = int(cursor.fetchone()[0] or 0)
    connection.close()
    return size


class Timed:
    """Seconds spent in ``function`` since the last :meth:`take` (wraps it)."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return round(seconds, 3)


SYNC = Timed(automation.sync_videos)
automation.sync_videos = runner.sync_videos = SYNC  # the walk + catalog update, timed apart


def apply_partition_requests(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a tick's partition requests (dagster 1.13
    ``_daemon/sensor.py``: a lookup per key, then one add call per request)."""
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        name = request.partitions_def_name
        keys = request.partition_keys
        new = [key for key in keys if not instance.has_dynamic_partition(name, key)]
        if new:
            instance.add_dynamic_partitions(name, new)


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[dict, dg.SensorResult]:
    """One sensor evaluation and what the daemon then does with its partition requests:
    seconds in all, in the catalog sync, in the partition update."""
    started = time.perf_counter()
    result = new_videos_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    sensed = time.perf_counter()
    apply_partition_requests(instance, result)
    ended = time.perf_counter()
    times = {
        "s": round(ended - started, 3),
        "catalog_sync_s": SYNC.take(),
        "partitions_s": round(ended - sensed, 3),
    }
    return times, result


PARTITIONS_PAGE_QUERY = """
query Partitions($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      partitionKeysByDimension { name partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions
          materializingPartitions
        }
      }
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}
"""
"""The data of an asset's partitions page in the UI (its keys and each one's status)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ui_partitions_page(out: Path, asset: str, timeout_s: float = 600) -> dict:
    """A real ``dagster-webserver`` on 127.0.0.1 over the instance in ``out``: seconds for
    the partitions page's GraphQL query of ``asset``, twice (cold, warm), and its size."""
    port = free_port()
    env = dict(os.environ, DAGSTER_HOME=str(out / ".dagster"), DPL_OUTPUT_DIR=str(out))
    env.pop("http_proxy", None), env.pop("HTTP_PROXY", None)
    log = out / "webserver.log"
    executable = Path(sys.executable).with_name("dagster-webserver")
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(executable), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited:\n{log.read_text()[-2000:]}")
            try:
                with direct.open(f"{base}/server_info", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no webserver:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        body = json.dumps({"query": PARTITIONS_PAGE_QUERY, "variables": {"path": [asset]}})
        times, size, answer = [], 0, {}
        for _ in range(2):
            request = urllib.request.Request(
                f"{base}/graphql", body.encode(), {"Content-Type": "application/json"}
            )
            started = time.perf_counter()
            with direct.open(request, timeout=timeout_s) as response:
                data = response.read()
            times.append(round(time.perf_counter() - started, 3))
            size, answer = len(data), json.loads(data)
        node = answer.get("data", {}).get("assetNodeOrError") or {}
        stats = node.get("partitionStats") or {}
        return {
            "asset": asset,
            "query_s": times,
            "response_mb": round(size / 1e6, 1),
            "partitions": stats.get("numPartitions"),
            "errors": answer.get("errors"),
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # ours: started above, its own group
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def sensor_ticks(
    count: int, scratch: Path, new: int, changed: int, ui: bool, postgres_url: str | None
) -> dict:
    root, out = scratch / f"videos{count}", scratch / f"out{count}"
    started = time.perf_counter()
    make_files(root, count)
    made_s = time.perf_counter() - started
    store = ArtifactStore(out)
    url = fresh_database(postgres_url, f"dpl_bench_{count}") if postgres_url else None
    instance = instance_at(out / ".dagster", url)
    started = time.perf_counter()
    # The first registration as `dpl register` does it: catalog, then the partitions.
    register_videos(instance, store, parse_inputs({"video": str(root)}))
    register = {"s": round(time.perf_counter() - started, 3), "catalog_sync_s": SYNC.take()}
    store.catalog.save_graph(GRAPH)
    os.environ["DPL_OUTPUT_DIR"] = str(out)
    os.environ["DPL_SENSOR_SETTLE_S"] = "0"  # the stand-ins are complete as soon as written
    first, result = tick(instance, None)  # all registered, none run: requests runs for all
    first_runs = len(result.run_requests)
    steady, result = tick(instance, result.cursor)
    assert not result.run_requests
    make_files(root, new, start=count)
    for index in range(changed):  # spread over the folders, each its own content
        folder = root / f"speaker{(index * 97) % (count // 100):05d}"
        (folder / f"take{index % 100:02d}.mp4").write_bytes(b"new content %08d, longer" % index)
    busy, result = tick(instance, result.cursor)
    registered = len(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))
    catalog = catalog_bytes(out, url)
    row = {
        "videos": count,
        "instance": "postgres" if postgres_url else "sqlite",
        "make_files_s": round(made_s, 1),
        "first_registration": register,
        "first_tick": first,
        "first_tick_runs_requested": first_runs,
        "steady_tick": steady,
        f"tick_{new}_new_{changed}_changed": busy,
        "runs_requested": len(result.run_requests),
        "partitions": registered,
        "catalog_mb": round(catalog / 1e6, 1),
    }
    if ui:
        row["ui_partitions_page"] = ui_partitions_page(out, "wav")
    return row


def materialize(store: ArtifactStore, ids: list[str], empty: bool = False) -> None:
    """What a finished run of GRAPH leaves per video (``probe``, ``wav``, ``volume``),
    written directly: nothing decoded, and no fsync per file (a million would take an hour).
    ``empty``: files of 0 bytes (the report then has no audio stats; nothing else differs
    for a rerun, which reads no file)."""
    silence, volume = io.BytesIO(), io.BytesIO()
    soundfile.write(silence, np.zeros(1600, np.float32), 16000, format="WAV", subtype="FLOAT")
    np.save(volume, np.zeros(4, np.float32))
    contents = {"wav": silence.getvalue(), "volume": volume.getvalue()}
    if empty:
        contents = dict.fromkeys(contents, b"")
    for key in ("probe", *contents):
        store.artifact_path(key, ids[0]).parent.mkdir(parents=True, exist_ok=True)
    for video_id in ids:
        for key, data in contents.items():
            store.artifact_path(key, video_id).write_bytes(data)
        probe = b"" if empty else json.dumps({"video_id": video_id}).encode()
        store.artifact_path("probe", video_id).write_bytes(probe)


STEPS = {
    name: Timed(getattr(runner, name))
    for name in ("pending_videos_cached", "_report", "sweep_dead_temps")
}
for _name, _timed in STEPS.items():
    setattr(runner, _name, _timed)


def rerun_nothing_new(
    count: int,
    scratch: Path,
    postgres_url: str | None = None,
    empty: bool = False,
    reuse: bool = False,
) -> dict:
    """``dpl run``'s path (run_plan, then report.json written) over ``count`` finished
    videos: once to make the report's entries (the first report), then three times with
    nothing new, each split into its steps. ``empty``: 0-byte stand-ins and artefacts.
    ``reuse``: the videos, outputs and report entries an earlier call left in ``scratch``
    are taken as they are (SQLite only): the three reruns alone."""
    root, out = scratch / "materialized", scratch / "out_materialized"
    started = time.perf_counter()
    inputs_spec = {"video": str(root)}
    if reuse and postgres_url:
        raise SystemExit("--keep is for the SQLite instance only")
    reused = reuse and (out / "report.json").exists()
    if not reused:
        make_files(root, count, empty=empty)
    inputs = parse_inputs(inputs_spec)
    # the instance first: with PostgreSQL, the catalog is there too
    url = fresh_database(postgres_url, "dpl_bench_rerun") if postgres_url else None
    instance = instance_at(out / ".dagster", url)
    store = ArtifactStore(out)
    if not reused:
        materialize(store, list(store.catalog.register(inputs).all_ids), empty=empty)
    setup_s = time.perf_counter() - started
    runs = []
    for _ in range(3 if reused else 4):
        started = time.perf_counter()
        outcome = run_plan(plan_graph(GRAPH), inputs, out, instance, progress=lambda _: None)
        planned = time.perf_counter()
        counts = outcome.report.write(out / "report.json", outcome.dataset_outputs)
        outcome.report.close()
        ended = time.perf_counter()
        assert outcome.run_ids == [] and counts["processed"] == count, counts
        runs.append({
            "s": round(ended - started, 3),
            "catalog_sync_s": SYNC.take(),
            "dead_temps_s": STEPS["sweep_dead_temps"].take(),
            "pending_s": STEPS["pending_videos_cached"].take(),
            "report_entries_s": STEPS["_report"].take(),
            "report_write_s": round(ended - planned, 3),
        })  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    first, *rest = [None, *runs] if reused else runs
    return {
        "videos": count,
        "instance": "postgres" if postgres_url else "sqlite",
        "empty_files": empty,
        "reused": reused,
        "setup_s": round(setup_s, 1),
        "first_report": first,
        "rerun": rest,
        "best_s": min(run["s"] for run in rest),
        "report_mb": round((out / "report.json").stat().st_size / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--videos", type=int, nargs="*", default=[10_000, 100_000],
        help="sizes of the sensor measurement (none: only the rerun)",
    )  # fmt: skip
    parser.add_argument("--new", type=int, default=1000, help="new files in the busy tick")
    parser.add_argument("--changed", type=int, default=100, help="changed files in it")
    parser.add_argument("--ui", action="store_true", help="time the UI's partitions page")
    parser.add_argument(
        "--postgres-url", help="a PostgreSQL server (postgresql://user@127.0.0.1:port/db): "
        "each size gets a new database there; default: SQLite in the output dir"
    )  # fmt: skip
    parser.add_argument(
        "--postgres", action="store_true",
        help="start a throwaway PostgreSQL server (fsync on) on 127.0.0.1 for the run",
    )  # fmt: skip
    parser.add_argument("--scratch", type=Path, help="keep the files here (default: a temp dir)")
    parser.add_argument("--materialized", type=int, default=1000)
    parser.add_argument(
        "--empty-files", action="store_true",
        help="0-byte stand-ins and artefacts for the rerun (inodes only: a million videos "
        "then need no 20 GB of 4 KB blocks; a rerun reads no file, so it times the same)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", action="store_true",
        help="the rerun's files go to --scratch itself and stay there; an earlier --keep "
        "run's files there are reused (the three reruns alone, no setup, no first report)",
    )  # fmt: skip
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/automation.json"))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            sys.path.insert(0, str(REPO))  # the tests' server helper, as a script from here
            from dpl_assets_tests.servers import postgres

            server = stack.enter_context(postgres(durable=True))
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres has psycopg2
            args.postgres_url = f"postgresql+psycopg2://dagster@127.0.0.1:{server.port}/dagster"
        report = measure(args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))


def measure(args: argparse.Namespace) -> dict:
    """Every measurement the arguments ask for, as the report's dict."""
    with contextlib.ExitStack() as stack:
        if args.keep:
            if args.scratch is None:
                raise SystemExit("--keep needs --scratch")
            scratch = args.scratch
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            if args.scratch is not None:
                args.scratch.mkdir(parents=True, exist_ok=True)
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=args.scratch)))
        sensor = []
        for count in args.videos:
            sensor.append(
                sensor_ticks(count, scratch, args.new, args.changed, args.ui, args.postgres_url)
            )
            print(json.dumps(sensor[-1]), flush=True)
        rerun = (
            rerun_nothing_new(args.materialized, scratch, args.postgres_url,
                              empty=args.empty_files, reuse=args.keep)
            if args.materialized
            else None
        )  # fmt: skip
        print(json.dumps(rerun), flush=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "sensor": sensor,
        "rerun_nothing_new": rerun,
    }
    return report


if __name__ == "__main__":
    main()
