"""Benchmark: the new-video sensor's tick time at scale, and a rerun with nothing new.

- Sensor: ``--videos`` small stand-in files (16 bytes each, 100 per folder; the sensor only
  walks, stats and registers them) under one input root, a persistent SQLite instance.
  Times the first tick (registers everything, adds the partitions), a steady tick (nothing
  changed), and a tick after 10 new files and 1 changed file.
- Rerun: ``--materialized`` videos registered and with their ``wav`` + ``volume`` artefacts
  present (written directly, so no decoding is timed); times ``dpl run``'s path when
  nothing is new (registration scan, pending check, report).

    .venv/bin/python benchmarks/automation.py --videos 10000 100000 --materialized 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np

from dpl_assets.automation import new_videos_sensor
from dpl_assets.discovery import parse_inputs
from dpl_assets.graph import plan_graph
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.runner import run_plan
from dpl_assets.storage.store import ArtifactStore

GRAPH = [{"name": "VideoToWavNode", "params": {}}, {"name": "VolumeNode", "params": {}}]


def make_files(root: Path, count: int, start: int = 0) -> None:
    for index in range(start, start + count):
        folder = root / f"speaker{index // 100:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"take{index % 100:02d}.mp4").write_bytes(b"stand-in %08d" % index)


def instance_at(folder: Path) -> dg.DagsterInstance:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(folder))


def tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[float, dg.SensorResult]:
    started = time.perf_counter()
    result = new_videos_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, dg.AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    return time.perf_counter() - started, result


def sensor_ticks(count: int, scratch: Path) -> dict:
    root, out = scratch / f"videos{count}", scratch / f"out{count}"
    make_files(root, count)
    store = ArtifactStore(out)
    store.catalog.register(parse_inputs({"video": str(root)}))  # as `dpl register` leaves it
    os.environ["DPL_OUTPUT_DIR"] = str(out)
    os.environ["DPL_SENSOR_SETTLE_S"] = "0"  # the stand-ins are complete as soon as written
    instance = instance_at(out / ".dagster")
    first, result = tick(instance, None)
    steady, result = tick(instance, result.cursor)
    assert not result.run_requests
    make_files(root, 10, start=count)
    changed = root / "speaker00000" / "take00.mp4"
    changed.write_bytes(b"new content, longer")
    busy, result = tick(instance, result.cursor)
    assert len(result.run_requests) == 2, len(result.run_requests)  # 10 new in 1 run + 1
    registered = len(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))
    return {
        "videos": count,
        "first_tick_s": round(first, 3),
        "steady_tick_s": round(steady, 3),
        "tick_10_new_1_changed_s": round(busy, 3),
        "partitions": registered,
        "catalog_mb": round(sum(p.stat().st_size for p in out.glob("catalog.sqlite*")) / 1e6, 1),
    }


def rerun_nothing_new(count: int, scratch: Path) -> dict:
    root, out = scratch / "materialized", scratch / "out_materialized"
    make_files(root, count)
    inputs = parse_inputs({"video": str(root)})
    store = ArtifactStore(out)
    ids = list(store.catalog.register(inputs).all_ids)
    silence = np.zeros(1600, np.float32)
    for video_id in ids:  # what a finished run leaves (written directly: nothing decoded)
        store.save("wav", video_id, silence)
        store.save("volume", video_id, np.zeros(4, np.float32))
        store.save("probe", video_id, {"video_id": video_id})
    instance = instance_at(out / ".dagster")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        outcome = run_plan(plan_graph(GRAPH), inputs, out, instance, progress=lambda _: None)
        times.append(time.perf_counter() - started)
        assert outcome.run_ids == [] and len(outcome.reports) == count
    return {
        "videos": count,
        "rerun_s": [round(t, 3) for t in times],
        "best_s": round(min(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--materialized", type=int, default=1000)
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/automation.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        sensor = [sensor_ticks(count, scratch) for count in args.videos]
        for row in sensor:
            print(json.dumps(row))
        rerun = rerun_nothing_new(args.materialized, scratch)
        print(json.dumps(rerun))
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "sensor": sensor,
        "rerun_nothing_new": rerun,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
