"""End-to-end throughput: ``dpl run`` against a bare-library script doing the same work.

One invocation, on the same clips, whole processes alternated (bare, project[, default],
bare, project, ...), ``--repeats`` each, medians:

- **clips**, made offline and cached in the work folder by their parameters: a real face
  photo (scikit-image's astronaut, matplotlib's Grace Hopper) with a slow zoom and sway,
  real speech (LibriVox readings of Debian's ``pocketsphinx-testdata``), 25 fps H.264 +
  AAC (the recipe of the issue's measurement; needs the Debian packages ``sox``,
  ``python3-skimage``, ``python-matplotlib-data``, ``pocketsphinx-testdata``);
- a local **wav2vec2-base-sized model** folder (random weights, ``torch.manual_seed(0)``,
  with its feature extractor, ``do_normalize=True``): no model hub;
- **bare**: ``benchmarks/bare_pipeline.py`` (ffmpeg, transformers, PyAV, MediaPipe FaceMesh,
  cv2, simplejpeg, h5py) in ``--procs`` worker processes;
- **project**: ``dpl run`` of ``benchmarks/graphs/equal_work.json`` into a fresh output
  folder, with ``--workers PROCS`` when ``dpl run --help`` offers it;
- **default** (``--default-graph``): ``dpl run`` of ``dpl_assets/configs/default.json``,
  more work than the bare script does (no bare equivalent), reported beside.

Measured per process: wall time; CPU = user + sys of the process and every child it waited
for (``os.wait4``, the same numbers as a ``getrusage(RUSAGE_CHILDREN)`` delta), so ffmpeg
and worker processes count; ``ru_maxrss`` (the largest single process); and the peak RSS of
the whole process tree, polled from ``/proc`` every 0.2 s (the sum over the process and its
descendants). Per-stage project times are Dagster step durations (``STEP_START`` ->
``STEP_SUCCESS``/``STEP_FAILURE``) from the run's instance, summed over its runs; the bare
script's stage times are summed over its processes.

Checks, reported and never fatal: every clip ``processed`` in the project's report.json and
no bare error; the same frame count per clip on both sides; the project's 478-point mesh
(``landmarks_mesh``) against the bare one, in pixels.

    .venv/bin/python benchmarks/end_to_end.py [--clips 12 --seconds 8 --size 640x480
        --repeats 3 --procs 2 --workdir DIR --default-graph]

Writes ``benchmarks/results/end_to_end.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from bench_media import (
    ASTRONAUT,
    HOPPER,
    READINGS,
    missing_packages,
    step_model_seconds,
    step_spans,
)

from dpl_assets.media.ffmpeg import ffmpeg_executable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PYTHON = REPO / ".venv" / "bin" / "python"
DPL = REPO / ".venv" / "bin" / "dpl"
BARE = HERE / "bare_pipeline.py"
EQUAL_WORK_GRAPH = HERE / "graphs" / "equal_work.json"
DEFAULT_GRAPH = REPO / "dpl_assets" / "configs" / "default.json"
RESULTS = HERE / "results" / "end_to_end.json"
MODEL_MARK = "@WAV2VEC_MODEL@"
ENV_DROPPED = ("DAGSTER_HOME", "DPL_OUTPUT_DIR", "DPL_NODES")
FPS = 25
POLL_S = 0.2
MB = 1024 * 1024

# (photo, crop of the photo: w:h:x:y) per clip, alternating: odd clips, even clips.
FACES = ((ASTRONAUT, "320:240:65:0"), (HOPPER, "512:384:0:24"))
CLIP_RECIPE = 1  # bump when the clips change, so cached ones are remade

MAKE_MODEL = """
import sys
import torch
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model
torch.manual_seed(0)
Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(sys.argv[1])
Wav2Vec2FeatureExtractor(
    feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
    return_attention_mask=False,
).save_pretrained(sys.argv[1])
"""


# --------------------------------------------------------------------------------------
# Inputs: clips and the model folder
# --------------------------------------------------------------------------------------


def zoom_filter(crop: str, width: int, height: int) -> str:
    """A still photo -> slow zoom and sway at 25 fps (zoompan on a 4x, or 2x, upscale)."""
    k = 2 if width > 1000 else 4
    zoom = f"1.08+0.04*sin(2*PI*on/({FPS}*4))"
    x = f"iw/2-iw/zoom/2+iw*0.012*sin(2*PI*on/({FPS}*3))"
    y = f"ih/2-ih/zoom/2+ih*0.01*cos(2*PI*on/({FPS}*5))"
    return (
        f"[0:v]crop={crop},scale={width * k}:{height * k}:flags=lanczos,"
        f"zoompan=z='{zoom}':x='{x}':y='{y}':d=1:s={width}x{height}:fps={FPS},"
        "setsar=1,format=yuv420p[v]"
    )


def make_clip(index: int, speech: Path, out: Path, seconds: float, size: tuple[int, int]):
    """One talking clip: photo ``index`` (alternating faces) with ``speech``, H.264 + AAC."""
    photo, crop = FACES[(index + 1) % 2]
    argv = [
        ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
        "-loop", "1", "-framerate", str(FPS), "-t", f"{seconds:g}", "-i", f"file:{photo}",
        "-i", f"file:{speech}", "-filter_complex", zoom_filter(crop, *size),
        "-map", "[v]", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "1",
        "-t", f"{seconds:g}", f"file:{out}",
    ]  # fmt: skip
    subprocess.run(argv, check=True)


def make_clips(workdir: Path, count: int, seconds: float, size: tuple[int, int]) -> Path:
    """The clips and their inputs.json, cached by parameters; returns the inputs.json."""
    folder = workdir / "clips" / f"{count}x{seconds:g}s_{size[0]}x{size[1]}_r{CLIP_RECIPE}"
    inputs = folder / "inputs.json"
    if inputs.is_file():
        return inputs
    missing = missing_packages()
    if missing:
        sys.exit(
            f"end_to_end: the clips need the Debian package(s) {', '.join(missing)}: "
            f"sudo apt-get install {' '.join(missing)}"
        )
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "videos").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        speech = Path(scratch) / "all.wav"
        subprocess.run(["sox", "-V1", *map(str, READINGS), str(speech)], check=True)
        total = float(
            subprocess.run(
                ["soxi", "-D", str(speech)], check=True, capture_output=True, text=True
            ).stdout
        )
        for index in range(1, count + 1):
            start = round((index * 2.3) % max(0.1, total - seconds), 2)
            part = Path(scratch) / f"s{index}.wav"
            trim = ["trim", str(start), f"{seconds:g}", "pad", "0", f"{seconds:g}"]
            trim += ["trim", "0", f"{seconds:g}"]
            subprocess.run(["sox", "-V1", str(speech), str(part), *trim], check=True)
            make_clip(index, part, folder / "videos" / f"clip_{index:03d}.mp4", seconds, size)
    inputs.write_text(json.dumps({"video": "videos"}), encoding="utf-8")
    print(f"made {count} clips in {folder}", flush=True)
    return inputs


def make_model(workdir: Path) -> Path:
    """The wav2vec2-base-sized model folder (random init, seed 0), made once."""
    folder = workdir / "wav2vec2-base-random"
    if (folder / "preprocessor_config.json").is_file():
        return folder
    part = workdir / "wav2vec2-base-random.part"
    shutil.rmtree(part, ignore_errors=True)
    subprocess.run([str(PYTHON), "-c", MAKE_MODEL, str(part)], check=True)
    shutil.rmtree(folder, ignore_errors=True)
    part.rename(folder)
    print(f"made the model folder {folder}", flush=True)
    return folder


def write_graph(template: Path, model: Path, dest: Path) -> Path:
    """The graph template with the model folder filled in, written to ``dest``."""
    text = template.read_text(encoding="utf-8").replace(MODEL_MARK, str(model))
    dest.write_text(text, encoding="utf-8")
    return dest


# --------------------------------------------------------------------------------------
# Whole-process measurement
# --------------------------------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int, int]]:
    """Every process: pid -> (parent pid, user+sys clock ticks, resident pages)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        table[int(entry.name)] = (
            int(fields[1]),
            int(fields[11]) + int(fields[12]),
            int(fields[21]),
        )
    return table


def kept_frame_bytes() -> int:
    """Bytes of the frames dpl processes of this user keep now (``frame_cache``'s folders)."""
    root = Path(os.environ.get("DPL_FRAME_CACHE_DIR") or "/dev/shm") / f"dpl-frames-{os.getuid()}"
    total = 0
    try:
        for folder in os.scandir(root):
            for entry in os.scandir(folder.path):
                with contextlib.suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:  # none kept, or a folder removed meanwhile
        pass
    return total


class TreeSampler(threading.Thread):
    """Polls a process tree: the peak of its summed RSS, its most processes at once, and
    the last CPU ticks seen per process (a check on processes nobody waited for)."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.stop = root, threading.Event()
        self.peak_bytes, self.peak_processes = 0, 0
        self.peak_kept_bytes = 0  # frames kept on tmpfs between steps (not in any RSS)
        self.ticks: dict[int, int] = {}
        self.page = os.sysconf("SC_PAGE_SIZE")

    def sample(self) -> None:
        """One look at the tree."""
        table = process_table()
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        tree, stack = [], [self.root]
        while stack:
            pid = stack.pop()
            if pid in table:
                tree.append(pid)
                stack.extend(children.get(pid, []))
        self.peak_bytes = max(self.peak_bytes, sum(table[p][2] for p in tree) * self.page)
        self.peak_processes = max(self.peak_processes, len(tree))
        self.peak_kept_bytes = max(self.peak_kept_bytes, kept_frame_bytes())
        for pid in tree:
            self.ticks[pid] = max(self.ticks.get(pid, 0), table[pid][1])

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self.sample()


def run_measured(argv: list[str], log: Path, cwd: Path) -> dict[str, Any]:
    """Run ``argv`` to the end; its wall, CPU (tree, waited), RSS; stdout+stderr to ``log``."""
    env = {key: value for key, value in os.environ.items() if key not in ENV_DROPPED}
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit": proc.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "cpu_s_polled": round(sum(sampler.ticks.values()) / os.sysconf("SC_CLK_TCK"), 3),
        "peak_rss_mb": round(sampler.peak_bytes / MB, 1),
        "peak_kept_frames_mb": round(sampler.peak_kept_bytes / MB, 1),
        "max_process_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_processes": sampler.peak_processes,
    }


def log_tail(log: Path, chars: int = 2000) -> str:
    """The end of a run's log, for an error message."""
    return log.read_text(errors="replace")[-chars:]


# --------------------------------------------------------------------------------------
# The sides
# --------------------------------------------------------------------------------------


def dpl_workers_option() -> bool:
    """Whether this checkout's ``dpl run`` offers ``--workers``."""
    help_text = subprocess.run(
        [str(DPL), "run", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return "--workers" in help_text


def run_bare(videos: Path, model: Path, out: Path, procs: int, log: Path) -> dict[str, Any]:
    """The bare-library script as a whole process; its JSON summary is its last line."""
    argv = [str(PYTHON), str(BARE), "--videos", str(videos), "--out", str(out),
            "--model", str(model), "--procs", str(procs)]  # fmt: skip
    result = run_measured(argv, log, out.parent)
    try:
        summary = json.loads(log.read_text(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"bare run gave no summary:\n{log_tail(log)}") from None
    result["summary"] = summary
    result["complete"] = not summary["errors"]
    return result


def run_project(graph: Path, inputs: Path, out: Path, workers: int | None, log: Path) -> dict:
    """``dpl run`` as a whole process into the fresh folder ``out``; report and steps."""
    argv = [str(DPL), "run", "--graph", str(graph), "--inputs", str(inputs),
            "--output_dir", str(out)]  # fmt: skip
    if workers:
        argv += ["--workers", str(workers)]
    result = run_measured(argv, log, out.parent)
    report_path = out / "report.json"
    if not report_path.is_file():
        raise RuntimeError(
            f"dpl run wrote no report.json (exit {result['exit']}):\n{log_tail(log)}"
        )
    report = json.loads(report_path.read_text(encoding="utf-8"))
    result["report_summary"] = report["summary"]
    result["not_processed"] = {
        video["video_id"]: video.get("reason") or video["status"]
        for video in report["videos"]
        if video["status"] != "processed"
    }
    result["steps"] = step_times(out / ".dagster")
    return result


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of time intervals."""
    total, end = 0.0, float("-inf")
    for first, last in sorted(intervals):
        if last > end:
            total += last - max(first, end)
            end = last
    return total


def step_times(instance_dir: Path) -> dict[str, Any]:
    """Per step key: seconds summed over every run, wall (union over runs), and runs' wall."""
    import dagster as dg

    intervals = step_spans(instance_dir)
    runs = []
    with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
        for run in instance.get_runs():
            stats = instance.get_run_stats(run.run_id)
            runs.append(
                {
                    "run_id": run.run_id,
                    "job": run.job_name,
                    "status": run.status.value,
                    "start": stats.start_time,
                    "end": stats.end_time,
                }
            )
    models = step_model_seconds(instance_dir)
    steps = {
        key: {
            "sum_s": round(sum(b - a for a, b in spans), 3),
            "wall_s": round(union_seconds(spans), 3),
            "runs": len(spans),
            "models_s": round(models.get(key, 0.0), 3),
        }
        for key, spans in sorted(intervals.items())
    }
    spans = [(r["start"], r["end"]) for r in runs if r["start"] and r["end"]]
    return {"steps": steps, "runs": runs, "runs_wall_s": round(union_seconds(spans), 3)}


def run_side(side: str, setup: dict[str, Any], out: Path, log: Path) -> dict[str, Any]:
    """One whole-process run of ``side`` (bare, project, default) into the fresh ``out``."""
    if side == "bare":
        return run_bare(setup["videos"], setup["model"], out, setup["procs"], log)
    return run_project(setup["graphs"][side], setup["inputs"], out, setup["workers"], log)


# --------------------------------------------------------------------------------------
# Outputs, compared loosely
# --------------------------------------------------------------------------------------


def mesh_distances(bare: np.ndarray, project: np.ndarray) -> np.ndarray:
    """Pixel distances (x, y) between two (N, 478, 3) meshes where both found a face."""
    if bare.shape != project.shape:
        return np.zeros(0)
    distances = np.linalg.norm(bare[..., :2].astype(np.float64) - project[..., :2], axis=-1)
    return distances[np.isfinite(distances)]


def compare_clip(bare_h5: Path, project_out: Path) -> tuple[dict[str, Any], np.ndarray]:
    """One clip: frames, faces found and boxes on both sides; the mesh distances."""
    video_id = bare_h5.stem
    with h5py.File(bare_h5, "r") as f:
        bare_frames, bare_mesh, bare_box = len(f["crops"]), f["landmarks"][()], f["bbox"][()]
    mesh_path = project_out / "landmarks_mesh" / f"{video_id}.npy"
    h5_path = project_out / "h5_dataset" / f"{video_id}.h5"
    if not (mesh_path.is_file() and h5_path.is_file()):
        return {"video": video_id, "missing_in_project": True}, np.zeros(0)
    project_mesh = np.load(mesh_path, allow_pickle=False)
    with h5py.File(h5_path, "r") as f:
        project_frames, project_box = len(f["crops"]), f["bboxes"][0]
    distances = mesh_distances(bare_mesh, project_mesh)
    entry = {
        "video": video_id,
        "frames": [bare_frames, project_frames],
        "faces": [int(np.isfinite(m[:, 0, 0]).sum()) for m in (bare_mesh, project_mesh)],
        "bbox": [bare_box.tolist(), project_box.tolist()],
        "mesh_px_mean": round(float(distances.mean()), 2) if distances.size else None,
        "mesh_px_max": round(float(distances.max()), 2) if distances.size else None,
    }
    return entry, distances


def compare_outputs(bare_out: Path, project_out: Path) -> dict[str, Any]:
    """Frame counts per clip and the 478-point mesh difference, bare vs project (px)."""
    clips, every = [], []
    for bare_h5 in sorted((bare_out / "h5").glob("*.h5")):
        entry, distances = compare_clip(bare_h5, project_out)
        clips.append(entry)
        every.append(distances)
    distances = np.concatenate(every) if every else np.zeros(0)
    same = all(e.get("frames", [0, 1])[0] == e.get("frames", [0, 1])[1] for e in clips)
    stats = {}
    if distances.size:
        stats = {
            "mean": round(float(distances.mean()), 2),
            "median": round(float(np.median(distances)), 2),
            "p95": round(float(np.percentile(distances, 95)), 2),
            "max": round(float(distances.max()), 2),
        }
    return {
        "clips": len(clips),
        "same_frames": same and bool(clips),
        "mesh_px": stats,
        "per_clip": clips,
    }


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------

SIDE_LABELS = {
    "bare": "bare script",
    "project": "project, equal-work graph",
    "default": "project, default graph",
}
METRICS = (
    "wall_s", "cpu_s", "cpu_s_polled", "peak_rss_mb", "max_process_rss_mb", "peak_kept_frames_mb"
)  # fmt: skip
# (stage, bare timers, bare libraries, project steps): the work each project step does
# beside the bare stages doing it. face_alignment decodes the images' JPEG frames inside.
STAGE_ROWS = (
    ("audio", ("audio",), "ffmpeg", ("wav",)),
    ("w2v", ("w2v",), "transformers wav2vec2", ("wav2vec",)),
    ("decode + face", ("decode_mesh", "face"), "PyAV + MediaPipe FaceMesh", ("face_alignment",)),
    (
        "decode + crop + encode",
        ("decode_crop", "crop", "encode"),
        "PyAV + cv2 + simplejpeg + h5py",
        ("crops", "h5_dataset"),
    ),
)
BARE_TIMERS = ("audio", "w2v", "decode", "face", "crop", "encode", "decode_mesh", "decode_crop")


def median_of(values: list[float]) -> float:
    """The median, 0 for no values."""
    return float(statistics.median(values)) if values else 0.0


def side_summary(runs: list[dict[str, Any]], videos: int) -> dict[str, Any]:
    """Medians of one side's runs, and the rates they give."""
    medians = {metric: median_of([run[metric] for run in runs]) for metric in METRICS}
    summary = {metric: round(value, 2) for metric, value in medians.items()}
    summary["videos_per_min"] = round(60 * videos / medians["wall_s"], 2)
    summary["cpu_s_per_video"] = round(medians["cpu_s"] / videos, 2)
    summary["wall_s_all"] = [run["wall_s"] for run in runs]
    summary["cpu_s_all"] = [run["cpu_s"] for run in runs]
    summary["all_complete"] = all(run["complete"] for run in runs)
    if "steps" in runs[0]:  # dpl run: time before, between and after its Dagster runs
        runs_wall = median_of([run["steps"]["runs_wall_s"] for run in runs])
        summary["dagster_runs_wall_s"] = round(runs_wall, 2)
        summary["outside_runs_s"] = round(medians["wall_s"] - runs_wall, 2)
    else:  # the bare script: imports and model loads per worker, outside its stage times
        start_up = median_of([max(run["summary"]["load_s"]) for run in runs])
        summary["worker_start_up_s"] = round(start_up, 2)
    return summary


def step_medians(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per Dagster step key: median over runs of its summed and wall seconds."""
    keys = sorted({key for run in runs for key in run["steps"]["steps"]})
    return {
        key: {
            field: round(
                median_of([run["steps"]["steps"].get(key, {}).get(field, 0.0) for run in runs]), 3
            )
            for field in ("sum_s", "wall_s", "models_s")
        }
        for key in keys
    }


def rate(frames: int, seconds: float) -> float | None:
    """Frames per second of stage time (None for no time)."""
    return round(frames / seconds, 1) if seconds > 0 else None


def stage_rows(bare_s: dict[str, float], steps: dict[str, dict], frames: int) -> list[dict]:
    """Each bare stage beside the project step(s) doing its work, in frames/s."""
    rows = []
    for stage, timers, libraries, step_keys in STAGE_ROWS:
        bare = sum(bare_s.get(timer, 0.0) for timer in timers)
        project = sum(steps.get(key, {}).get("sum_s", 0.0) for key in step_keys)
        # The bare timers leave out its imports and model loads (its workers' start-up):
        # so does the compared project time; both start-ups are reported.
        models = sum(steps.get(key, {}).get("models_s", 0.0) for key in step_keys)
        work = project - models
        rows.append(
            {
                "stage": stage,
                "bare_libraries": libraries,
                "bare_timers": list(timers),
                "bare_s": round(bare, 3),
                "bare_fps": rate(frames, bare),
                "project_steps": list(step_keys),
                "project_s": round(project, 3),
                "project_models_s": round(models, 3),
                "project_fps": rate(frames, work),
                "project_over_bare": round(bare / work, 2) if bare > 0 and work > 0 else None,
            }
        )
    return rows


def summarise(measurements: list[dict[str, Any]], videos: int, frames: int) -> dict[str, Any]:
    """Medians per side, the project/bare ratios, and the stage table."""
    by_side: dict[str, list[dict[str, Any]]] = {}
    for run in measurements:
        by_side.setdefault(run["side"], []).append(run)
    sides = {side: side_summary(runs, videos) for side, runs in by_side.items()}
    bare, project = sides["bare"], sides["project"]
    ratios = {
        "throughput": round(bare["wall_s"] / project["wall_s"], 2),
        "cpu": round(project["cpu_s"] / bare["cpu_s"], 2),
        "peak_rss": round(project["peak_rss_mb"] / bare["peak_rss_mb"], 2),
    }
    bare_s = {
        timer: round(median_of([run["summary"]["stage_s"][timer] for run in by_side["bare"]]), 3)
        for timer in BARE_TIMERS
    }
    steps = {side: step_medians(by_side[side]) for side in by_side if side != "bare"}
    mapped = {key for row in STAGE_ROWS for key in row[3]}
    return {
        "sides": sides,
        "project_over_bare": ratios,
        "bare_stage_s": bare_s,
        "bare_stage_fps": {timer: rate(frames, seconds) for timer, seconds in bare_s.items()},
        "stages": stage_rows(bare_s, steps["project"], frames),
        "project_only_steps": {k: v for k, v in steps["project"].items() if k not in mapped},
        "steps": steps,
    }


def side_table(summary: dict[str, Any]) -> list[str]:
    """The whole-process table: one row per side, then the project/bare ratios."""
    lines = [
        "| | wall s | videos/min | CPU s | CPU s/video | peak RSS MB (tree) | largest process MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for side, row in summary["sides"].items():
        lines.append(
            f"| {SIDE_LABELS[side]} | {row['wall_s']:.1f} | {row['videos_per_min']:.1f} "
            f"| {row['cpu_s']:.1f} | {row['cpu_s_per_video']:.2f} | {row['peak_rss_mb']:.0f} "
            f"| {row['max_process_rss_mb']:.0f} |"
        )
    ratio = summary["project_over_bare"]
    lines.append(
        f"| **project / bare** | | **{ratio['throughput']:.2f}x throughput** | "
        f"{ratio['cpu']:.2f}x | | {ratio['peak_rss']:.2f}x | |"
    )
    return lines


def stage_table(summary: dict[str, Any]) -> list[str]:
    """Per stage: the bare libraries' frames/s beside the project step(s) doing that work."""
    lines = [
        "| stage | bare libraries | bare s | bare frames/s | project steps | project s "
        "(of it models made) | project frames/s | project/bare |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["stages"]:
        ratio = f"{row['project_over_bare']:.2f}x" if row["project_over_bare"] else "-"
        lines.append(
            f"| {row['stage']} | {row['bare_libraries']} | {row['bare_s']:.1f} "
            f"| {row['bare_fps']} | {' + '.join(row['project_steps'])} | {row['project_s']:.1f}"
            + (f" ({row['project_models_s']:.1f})" if row.get("project_models_s") else "")
            + f" | {row['project_fps']} | {ratio} |"
        )
    only = summary["project_only_steps"]
    checks = sum(v["sum_s"] for k, v in only.items() if k.endswith("_output_valid"))
    others = ", ".join(
        f"{key} {value['sum_s']:.1f}"
        for key, value in sorted(only.items(), key=lambda item: -item[1]["sum_s"])
        if not key.endswith("_output_valid")
    )
    lines.append(f"| project only | | | | {others}; output checks {checks:.1f} | | | |")
    return lines


def git_line(git: dict[str, Any]) -> str:
    """The code measured: its commit, uncommitted changes, and whether it moved meanwhile."""
    start, end = git["at_start"], git["at_end"]
    line = f"git {start['head'][:7]}" + (
        " + uncommitted dpl_assets changes" if start["dirty"] else ""
    )
    if any(start[key] != end[key] for key in ("head", "changed", "diff_sha1")):
        line += f" (changed during the runs: {end['head'][:7]} at the end)"
    return line


def markdown(report: dict[str, Any]) -> str:
    """The printed summary: settings, the two tables and the checks."""
    summary, setup, checks = report["summary"], report["setup"], report["checks"]
    mesh = checks["outputs"]["mesh_px"]
    loads = [run["load_before"] for run in report["measurements"]]
    lines = [
        f"{setup['clips']} clips of {setup['seconds']:g} s {setup['size']}, bare with "
        f"{setup['procs']} processes, `dpl run {setup['dpl_run_option'] or '(no --workers)'}`; "
        f"medians of {setup['repeats']}; {git_line(report['git'])}; load average before "
        f"each run {min(loads):.1f}-{max(loads):.1f} on {report['machine']['cpus']} cores",
        "",
        *side_table(summary),
        "",
        *stage_table(summary),
        "",
        "- bare stages alone, frames/s: "
        + ", ".join(f"{timer} {fps}" for timer, fps in summary["bare_stage_fps"].items()),
        f"- outside the stages: bare workers' start-up (imports, model loads) "
        f"{summary['sides']['bare']['worker_start_up_s']:.1f} s; dpl run outside its Dagster "
        f"runs (start-up, registration, report) "
        + ", ".join(
            f"{side} {row['outside_runs_s']:.1f} s"
            for side, row in summary["sides"].items()
            if "outside_runs_s" in row
        )
        + "; project step times include their models' making (in brackets), which the "
        "frames/s and ratios leave out, as the bare timers leave out its start-up",
        f"- complete: project every clip processed in every run: {checks['project_complete']}; "
        f"bare without errors: {checks['bare_complete']}",
        f"- same frame count per clip: {checks['outputs']['same_frames']}; 478-point mesh, "
        f"project vs bare (px): mean {mesh.get('mean')}, p95 {mesh.get('p95')}, "
        f"max {mesh.get('max')}",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def git_state() -> dict[str, Any]:
    """The commit checked out, and the package's uncommitted changes (``dpl`` runs them)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        ).stdout

    changed = git("status", "--porcelain", "--", "dpl_assets").splitlines()
    diff = hashlib.sha1(git("diff", "HEAD", "--", "dpl_assets").encode()).hexdigest()[:12]
    return {
        "head": git("rev-parse", "HEAD").strip(),
        "dirty": bool(changed),
        "changed": changed,
        "diff_sha1": diff,
    }


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", default="640x480", help="WxH (%(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (%(default)s)")
    parser.add_argument("--procs", type=int, default=2, help="bare processes, dpl --workers")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dpl_end_to_end",
        help="clips, model and run folders (%(default)s)",
    )
    parser.add_argument(
        "--default-graph", action="store_true", help="also run dpl_assets/configs/default.json"
    )
    parser.add_argument("--keep", action="store_true", help="keep every run's output folder")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    width, _, height = args.size.partition("x")
    args.size_wh = (int(width), int(height))
    return args


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Clips, model, graphs and the ``dpl run`` option: everything the runs share."""
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = make_clips(workdir, args.clips, args.seconds, args.size_wh)
    model = make_model(workdir)
    runs = workdir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    graphs = {"project": write_graph(EQUAL_WORK_GRAPH, model, runs / "equal_work.json")}
    if args.default_graph:
        graphs["default"] = DEFAULT_GRAPH
    workers = args.procs if dpl_workers_option() else None
    return {
        "inputs": inputs,
        "videos": inputs.parent / "videos",
        "model": model,
        "runs": runs,
        "graphs": graphs,
        "procs": args.procs,
        "workers": workers,
    }


def measure(setup: dict[str, Any], repeats: int, keep: bool) -> tuple[list, dict]:
    """Every side ``repeats`` times, alternated; the first repeat's outputs compared."""
    measurements: list[dict[str, Any]] = []
    comparison: dict[str, Any] = {}
    sides = ["bare", *setup["graphs"]]
    for repeat in range(repeats):
        for side in sides:
            out, log = setup["runs"] / f"{side}_{repeat}", setup["runs"] / f"{side}_{repeat}.log"
            load = os.getloadavg()[0]
            result = run_side(side, setup, out, log)
            if side != "bare":
                result["complete"] = result["exit"] == 0 and not result["not_processed"]
            result.update(side=side, repeat=repeat, load_before=round(load, 2))
            measurements.append(result)
            print(
                f"  {repeat} {side:8} wall {result['wall_s']:7.2f} s  cpu {result['cpu_s']:7.2f}"
                f" s  rss {result['peak_rss_mb']:6.0f} MB  complete {result['complete']}"
                f"  (load {load:.1f})",
                flush=True,
            )
        if repeat == 0:
            comparison = compare_outputs(setup["runs"] / "bare_0", setup["runs"] / "project_0")
        for side in sides:
            if not keep:
                shutil.rmtree(setup["runs"] / f"{side}_{repeat}", ignore_errors=True)
    return measurements, comparison


def main() -> int:
    """Prepare, measure, summarise, write the JSON and print the tables."""
    args = parse_args()
    started = time.perf_counter()
    git_start = git_state()
    setup = prepare(args)
    option = f"--workers {setup['workers']}" if setup["workers"] else ""
    print(f"runs in {setup['runs']}; dpl run {option or '(no --workers option)'}", flush=True)
    measurements, comparison = measure(setup, args.repeats, args.keep)
    bare_runs = [m for m in measurements if m["side"] == "bare"]
    frames = bare_runs[0]["summary"]["frames"]
    report = {
        "benchmark": "end_to_end",
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "git": {"at_start": git_start, "at_end": git_state()},
        "setup": {
            "clips": args.clips,
            "seconds": args.seconds,
            "size": args.size,
            "repeats": args.repeats,
            "procs": args.procs,
            "frames": frames,
            "dpl_run_option": option,
            "graphs": {k: str(v) for k, v in setup["graphs"].items()},
            "order": "per repeat: " + ", ".join(["bare", *setup["graphs"]]),
        },
        "checks": {
            "project_complete": all(m["complete"] for m in measurements if m["side"] != "bare"),
            "bare_complete": all(m["complete"] for m in bare_runs),
            "outputs": comparison,
        },
        "summary": summarise(measurements, args.clips, frames),
        "measurements": measurements,
        "benchmark_wall_s": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print()
    print(markdown(report))
    print(f"\nwrote {args.output} ({report['benchmark_wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
