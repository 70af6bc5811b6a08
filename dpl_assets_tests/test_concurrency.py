"""Several ``dpl`` processes on one output dir at once: no video's asset computed twice,
one Dagster instance created once, every process succeeds.

Real processes (``python -m dpl_assets.cli``), started together. Which videos each step of
each process computed is read off the step's summary log line (``computed ids: [...]``,
printed with ``--verbose``); the instance's SQLite databases are read with ``sqlite3``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg

from dpl_assets.assets.step_log import COMPUTED_IDS_LABEL
from dpl_assets.partitions import VIDEOS_PARTITION_NAME
from dpl_assets.settings import INSTANCE_SUBDIR
from dpl_assets.validation import VideoFacts, check_artifact
from dpl_assets_tests import media_factory as media

VIDEOS = [f"clip{index}" for index in range(6)]
GRAPH = [
    {"name": "VideoToWavNode", "params": {"num_jobs": 1}},
    {"name": "VolumeNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {"ext": ".png", "num_jobs": 1}},
]
STEP_LINE = re.compile(rf"(\S+): \d+ videos in [\d.]+ s: .*{COMPUTED_IDS_LABEL} (\[.*?\])")


def _files(
    tmp_path: Path, videos: list[str], graph: list, size: tuple[int, int] = (160, 120)
) -> tuple[Path, Path]:
    folder = tmp_path / "videos"
    for index, name in enumerate(videos):
        media.make_talking_clip(folder / f"{name}.mp4", seconds=1.5 + 0.2 * index, size=size)
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(graph))
    inputs_file = tmp_path / "inputs.json"
    inputs_file.write_text(json.dumps({"video": str(folder)}))
    return graph_file, inputs_file


def _start(arguments: list[str], log: Path) -> subprocess.Popen:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "dpl_assets.cli", *arguments],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def _run_together(commands: list[list[str]], logs: list[Path], timeout_s: float = 600) -> list:
    processes = [_start(arguments, log) for arguments, log in zip(commands, logs, strict=True)]
    try:
        return [process.wait(timeout=timeout_s) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def computed_per_step(log: Path) -> Counter:
    """(step, video) -> how many times that process computed it, from its step logs."""
    counts: Counter = Counter()
    for step, ids in STEP_LINE.findall(log.read_text(errors="replace")):
        for video_id in json.loads(ids):
            counts[(step, video_id)] += 1
    return counts


def test_two_runs_at_once_compute_each_video_once(tmp_path):
    graph_file, inputs_file = _files(tmp_path, VIDEOS, GRAPH, size=(640, 480))
    out = tmp_path / "out"
    base = ["--inputs", str(inputs_file), "--output_dir", str(out)]
    subprocess.run([sys.executable, "-m", "dpl_assets.cli", "register", *base], check=True)
    run = ["run", "--graph", str(graph_file), *base, "--chunk_size", "2", "--verbose"]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    codes = _run_together([run, run], logs)
    assert codes == [0, 0], "\n\n".join(log.read_text()[-3000:] for log in logs)

    per_process = [computed_per_step(log) for log in logs]
    total = per_process[0] + per_process[1]
    steps = {"probe", "wav", "volume", "images"}
    assert set(total) == {(step, video) for step in steps for video in VIDEOS}
    twice = {pair: n for pair, n in total.items() if n != 1}
    assert twice == {}, f"computed more than once: {twice}"
    # Both processes did part of the work (they really ran at the same time).
    assert all(per_process), [sorted(counts) for counts in per_process]

    for log in logs:
        assert "6 processed, 0 rejected, 0 failed" in log.read_text(), log.read_text()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert {v["video_id"]: v["status"] for v in report["videos"]} == dict.fromkeys(
        VIDEOS, "processed"
    )
    for video in VIDEOS:
        facts = VideoFacts.read(out / "images" / f"{video}.h5", out / "wav" / f"{video}.wav")
        for key, ext in (("wav", ".wav"), ("volume", ".npy"), ("images", ".h5")):
            assert check_artifact(key, out / key / f"{video}{ext}", facts) == [], (key, video)
    assert not list((out / "_claims").rglob("*.lock"))  # claims leave nothing behind


def alembic_versions(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]


def test_processes_started_at_once_on_a_new_output_dir_create_one_instance(tmp_path):
    graph_file, inputs_file = _files(
        tmp_path, ["a", "b"], [{"name": "VideoToWavNode", "params": {}}]
    )
    out = tmp_path / "out"
    run = ["run", "--graph", str(graph_file), "--inputs", str(inputs_file),
           "--output_dir", str(out)]  # fmt: skip
    logs = [tmp_path / f"run{index}.log" for index in range(4)]
    codes = _run_together([run] * 4, logs)
    assert codes == [0] * 4, "\n\n".join(log.read_text()[-3000:] for log in logs)

    instance = out / INSTANCE_SUBDIR
    databases = sorted(
        path for path in instance.rglob("*.db") if path.parent.name in ("history", "schedules")
        or path.name == "index.db"
    )  # fmt: skip
    names = {path.name for path in databases}
    assert {"runs.db", "schedules.db", "index.db"} <= names, sorted(instance.rglob("*"))
    for database in databases:
        assert len(alembic_versions(database)) == 1, database
    # Each video is one partition, however many processes registered it at once.
    with dg.DagsterInstance.from_config(str(instance)) as opened:
        assert sorted(opened.get_dynamic_partitions(VIDEOS_PARTITION_NAME)) == ["a", "b"]
    # And the instance stays usable: one more run works.
    assert _run_together([run], [tmp_path / "after.log"]) == [0]
