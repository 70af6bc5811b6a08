"""Kill ``dpl run`` with SIGKILL while it writes, start it again: complete, valid outputs.

The run is a real subprocess in its own process group, killed the moment a temp file shows
up (a write in progress). References: the output checks of :mod:`dpl_assets.validation`
(read straight from the files) and the files' modification times.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dpl_assets import cli
from dpl_assets.samples import make_clip
from dpl_assets.storage.atomic import TEMP_PREFIX
from dpl_assets.validation import CHECKED, VideoFacts, check_artifact

GRAPH = [
    {"name": "VideoToWavNode", "params": {}},
    {"name": "VideoToImagesNode", "params": {"ext": ".png"}},  # slow writes: easy to hit
    {"name": "FaceAlignmentNode", "params": {}},
    {"name": "FixedBboxesNode", "params": {}},
    {"name": "CropNode", "params": {"size_hw": [64, 64]}},
]
VIDEOS = ["one", "two", "three", "four"]


def outputs(out: Path) -> dict[Path, int]:
    """Files under their final names (not temp, not bookkeeping) -> mtime."""
    found = {}
    for key in CHECKED:
        folder = out / key
        for path in folder.glob("*") if folder.is_dir() else []:
            if not path.name.startswith(TEMP_PREFIX):
                found[path] = path.stat().st_mtime_ns
    return found


def temps(out: Path) -> list[Path]:
    return [p for p in out.rglob(f"{TEMP_PREFIX}*") if ".dagster" not in p.parts]


def staged(out: Path) -> list[Path]:
    """Files streamed to ``_staging`` (not the writers' lock markers)."""
    folder = out / "_staging"
    return [p for p in folder.rglob("*") if p.is_file() and ".writers" not in p.parts]


def assert_all_valid(out: Path, files) -> None:
    for path in files:
        video_id = path.stem
        facts = VideoFacts.read(out / "images" / f"{video_id}.h5", out / "wav" / f"{video_id}.wav")
        assert check_artifact(path.parent.name, path, facts) == [], path


def test_sigkill_mid_write_then_run_again(tmp_path):
    for index, name in enumerate(VIDEOS):
        make_clip(tmp_path / "videos" / f"{name}.mp4", "Some words.", seconds=2.0 + index * 0.4)
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "inputs.json").write_text(json.dumps({"video": "videos"}))
    out = tmp_path / "out"
    arguments = ["run", "--graph", str(tmp_path / "graph.json"), "--inputs",
                 str(tmp_path / "inputs.json"), "--output_dir", str(out),
                 "--chunk_size", "2"]  # fmt: skip
    stacks_in_progress = out / "_staging" / "images"  # a PNG stack takes a second to write

    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dpl_assets.cli", *arguments],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            writing = stacks_in_progress.is_dir() and any(stacks_in_progress.glob("*"))
            if writing and any((out / "wav").glob("*.wav")):
                break
            time.sleep(0.002)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # our own process group only
        process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert temps(out), "killed while nothing was being written"
    left_staged = staged(out)
    assert left_staged, "killed while no image stack was being streamed"

    survived = outputs(out)
    assert survived, "killed before anything was complete"
    assert_all_valid(out, survived)  # whatever has a final name is complete

    assert cli.main(arguments) == 0
    report = json.loads((out / "report.json").read_text())
    assert {v["video_id"]: v["status"] for v in report["videos"]} == dict.fromkeys(
        VIDEOS, "processed"
    )
    assert all(v["failed_checks"] == {} for v in report["videos"])
    assert temps(out) == []  # the killed writer's temp files are gone
    assert staged(out) == [], left_staged  # and so are the stacks it was streaming
    after = outputs(out)
    assert_all_valid(out, after)
    unchanged = {path for path, mtime in survived.items() if after.get(path) == mtime}
    assert unchanged == set(survived)  # nothing complete was computed again
    for key in ("wav", "images", "crops", "landmarks"):
        assert {p.stem for p in after if p.parent.name == key} == set(VIDEOS), key
