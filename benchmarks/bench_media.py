"""What the benchmarks that make talking clips share: the real media they are made of
(Debian packages, offline), the check that it is installed, and the Dagster step spans of
a run's instance and the seconds its steps took to make models. Imported by
``end_to_end.py`` and ``long_clip.py`` (run as scripts from this folder)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ASTRONAUT = Path("/usr/lib/python3/dist-packages/skimage/data/astronaut.png")
HOPPER = Path("/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
READINGS = [
    LIBRIVOX / f"sense_and_sensibility_01_austen_64kb-{n}.wav"
    for n in ("0870", "0880", "0890", "0920", "0930")
]
"""Real speech (LibriVox, public domain), joined with sox into one reading."""

CLIP_SOURCES: dict[str, list[str | Path]] = {
    "sox": ["sox", "soxi"],
    "python3-skimage": [ASTRONAUT],
    "python-matplotlib-data": [HOPPER],
    "pocketsphinx-testdata": list(READINGS),
}
"""Debian package -> the programs (str) or files (Path) of it the clips need."""


def missing_packages(packages: list[str] | None = None) -> list[str]:
    """Those of ``packages`` (default: every one of :data:`CLIP_SOURCES`) whose programs
    or files cannot be found."""
    missing = []
    for package in packages or list(CLIP_SOURCES):
        for need in CLIP_SOURCES[package]:
            found = shutil.which(need) if isinstance(need, str) else need.is_file()
            if not found:
                missing.append(package)
                break
    return missing


def h264_writer(path: Path, size: tuple[int, int], fps: int) -> subprocess.Popen[bytes]:
    """An ffmpeg process encoding the raw RGB frames (``size`` = width, height) written to
    its stdin as H.264 (libx264 veryfast, yuv420p) into ``path``: frames are streamed one by
    one, never all in memory. Close its stdin and wait for it when done."""
    from dpl_assets.media.ffmpeg import ffmpeg_executable

    width, height = size
    return subprocess.Popen(
        [ffmpeg_executable(), "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
         "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0", "-c:v", "libx264",
         "-preset", "veryfast", "-pix_fmt", "yuv420p", "file:" + str(path)],
        stdin=subprocess.PIPE,
    )  # fmt: skip


def step_spans(instance_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Per step key: its (start, end) unix times (``STEP_START`` -> ``STEP_SUCCESS`` or
    ``STEP_FAILURE``) over every run of the Dagster instance in ``instance_dir``."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    spans: dict[str, list[tuple[float, float]]] = {}
    with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
        for run in instance.get_runs():
            started: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id, of_type=kinds):
                event = entry.dagster_event
                if event is None or entry.step_key is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    started[entry.step_key] = entry.timestamp
                elif entry.step_key in started:
                    spans.setdefault(entry.step_key, []).append(
                        (started.pop(entry.step_key), entry.timestamp)
                    )
    return spans


MODELS_MADE = re.compile(r"models made in ([\d.]+) s;")
"""In a step's summary log line: the seconds its models took to make (imports, weights;
``dpl_assets.assets.step_log.MODELS_MADE_LABEL``)."""


def step_model_seconds(instance_dir: Path) -> dict[str, float]:
    """Per step key: the seconds its steps spent making models (start-up, the bare script's
    ``load_s``), summed over every run of the instance in ``instance_dir``."""
    import dagster as dg

    seconds: dict[str, float] = {}
    with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
        for run in instance.get_runs():
            for entry in instance.all_logs(run.run_id):
                found = entry.dagster_event is None and MODELS_MADE.search(entry.user_message)
                if found and entry.step_key:
                    seconds[entry.step_key] = seconds.get(entry.step_key, 0.0) + float(
                        found.group(1)
                    )
    return seconds
