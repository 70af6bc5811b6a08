"""Memory on one long clip: ``dpl run`` of the default graph on a long 1080p talking clip.

Issue 13's goal: a 60-minute 1080p clip through every default node within 1.2 GB RSS.

- **clip**, made offline and cached in the work folder: a 10 s 1920x1080 25 fps H.264 + AAC
  clip of a real face photo (scikit-image's astronaut) with a slow zoom and sway and real
  speech (LibriVox readings of Debian's ``pocketsphinx-testdata``; needs ``sox``,
  ``python3-skimage``, ``pocketsphinx-testdata``), repeated to ``--minutes`` with ffmpeg's
  ``-stream_loop`` and ``-c copy`` (no re-encode);
- **run**: ``dpl run --graph dpl_assets/configs/default.json --workers 1`` into a fresh
  output folder, a subprocess; its whole process tree's RSS (the sum over the process and
  its descendants, psutil, or ``/proc`` without it) sampled every 0.5 s;
- **per step**: each sample is assigned to the Dagster steps running at its time
  (``STEP_START`` -> ``STEP_SUCCESS``/``STEP_FAILURE`` timestamps of the run's events in
  ``{output_dir}/.dagster``); peak RSS and wall time per step;
- **disk**: bytes per output key (``{output_dir}/{key}/``) and in total, and the clip's.

    .venv/bin/python benchmarks/long_clip.py [--minutes 60] [--keep] [--workdir DIR]
        [--output benchmarks/results/long_clip.json]

Several ``--minutes`` values give the growth per minute of each step's peak (a
least-squares slope over the runs of one ``dpl_assets`` commit) and its extrapolation to
60 min. ``--source DIR`` runs another checkout's ``dpl_assets`` (a before/after); runs made
in parallel by separate invocations join one report with ``--include``.
Writes the JSON report (``--output``) and prints a table; each run's RSS timeline and
step spans stay in the work folder (``timeline_*.json``). The output folder is deleted
after each run unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_media import ASTRONAUT, READINGS, missing_packages, step_spans

from dpl_assets.media.ffmpeg import ffmpeg_executable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DPL = REPO / ".venv" / "bin" / "dpl"
DEFAULT_GRAPH = REPO / "dpl_assets" / "configs" / "default.json"
RESULTS = HERE / "results" / "long_clip.json"
ENV_DROPPED = ("DAGSTER_HOME", "DPL_OUTPUT_DIR", "DPL_NODES")
FPS = 25
WIDTH, HEIGHT = 1920, 1080
BASE_SECONDS = 10
POLL_S = 0.5
MB = 1024 * 1024
TARGET_MINUTES = 60
GOAL_MB = 1.2 * 1024  # 1.2 GB
CLIP_RECIPE = 1  # bump when the clip recipe changes (invalidates the cache)

FACE_CROP = "512:288:0:0"  # 16:9 band of the 512x512 photo holding the face
PACKAGES = ["sox", "python3-skimage", "pocketsphinx-testdata"]  # of bench_media


# --------------------------------------------------------------------------------------
# The clip
# --------------------------------------------------------------------------------------


def zoom_filter() -> str:
    """The still photo -> slow zoom and sway at 25 fps (zoompan on a 2x upscale)."""
    zoom = f"1.08+0.04*sin(2*PI*on/({FPS}*4))"
    x = f"iw/2-iw/zoom/2+iw*0.012*sin(2*PI*on/({FPS}*3))"
    y = f"ih/2-ih/zoom/2+ih*0.01*cos(2*PI*on/({FPS}*5))"
    return (
        f"[0:v]crop={FACE_CROP},scale={WIDTH * 2}:{HEIGHT * 2}:flags=lanczos,"
        f"zoompan=z='{zoom}':x='{x}':y='{y}':d=1:s={WIDTH}x{HEIGHT}:fps={FPS},"
        "setsar=1,format=yuv420p[v]"
    )


def make_base_clip(path: Path) -> None:
    """The 10 s talking clip: the photo with ``BASE_SECONDS`` of speech, H.264 + AAC."""
    missing = missing_packages(PACKAGES)
    if missing:
        sys.exit(
            f"long_clip: the clip needs the Debian package(s) {', '.join(missing)}: "
            f"sudo apt-get install {' '.join(missing)}"
        )
    seconds = str(BASE_SECONDS)
    with tempfile.TemporaryDirectory() as scratch:
        speech = Path(scratch) / "all.wav"
        part = Path(scratch) / "speech.wav"
        subprocess.run(["sox", "-V1", *map(str, READINGS), str(speech)], check=True)
        trim = ["trim", "2.3", seconds, "pad", "0", seconds, "trim", "0", seconds]
        subprocess.run(["sox", "-V1", str(speech), str(part), *trim], check=True)
        tmp = path.with_suffix(".part.mp4")
        argv = [
            ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
            "-loop", "1", "-framerate", str(FPS), "-t", seconds, "-i", f"file:{ASTRONAUT}",
            "-i", f"file:{part}", "-filter_complex", zoom_filter(),
            "-map", "[v]", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "23", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
            "-ar", "44100", "-ac", "1", "-t", seconds, f"file:{tmp}",
        ]  # fmt: skip
        subprocess.run(argv, check=True)
        tmp.rename(path)


def make_clip(workdir: Path, minutes: float) -> Path:
    """The ``minutes``-long clip and its inputs.json, cached; returns the inputs.json."""
    clips = workdir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    base = clips / f"base_{BASE_SECONDS}s_{WIDTH}x{HEIGHT}_r{CLIP_RECIPE}.mp4"
    if not base.is_file():
        make_base_clip(base)
    folder = clips / f"{minutes:g}min_{WIDTH}x{HEIGHT}_r{CLIP_RECIPE}"
    inputs = folder / "inputs.json"
    if inputs.is_file():
        return inputs
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "videos").mkdir(parents=True)
    seconds = minutes * 60
    loops = max(0, int(-(-seconds // BASE_SECONDS)) - 1)  # extra plays of the base clip
    out = folder / "videos" / f"long_{minutes:g}min.mp4"
    argv = [
        ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-y",
        "-stream_loop", str(loops), "-i", f"file:{base}", "-c", "copy",
        "-t", f"{seconds:g}", f"file:{out}",
    ]  # fmt: skip
    subprocess.run(argv, check=True)
    inputs.write_text(json.dumps({"video": "videos"}), encoding="utf-8")
    print(f"made {out} ({out.stat().st_size / MB:.1f} MB)", flush=True)
    return inputs


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


def tree_rss(pid: int) -> tuple[int, int]:
    """Bytes of RSS of process ``pid`` and all its descendants, and of ``pid`` alone
    ((0, 0) once it is gone)."""
    try:
        import psutil
    except ImportError:
        return _proc_tree_rss(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = alone = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            rss = proc.memory_info().rss
            total += rss
            alone = rss if proc.pid == pid else alone
    return total, alone


def _proc_tree_rss(pid: int) -> tuple[int, int]:
    """:func:`tree_rss` from ``/proc`` (Linux without psutil)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total, rss.get(pid, 0)


def run_sampled(
    argv: list[str], log: Path, cwd: Path, source: Path | None = None
) -> dict[str, Any]:
    """Runs ``argv``; every ``POLL_S`` the RSS of its process tree and of the process
    itself: [(unix time, tree bytes, process bytes), ...]. ``source``: a checkout whose
    ``dpl_assets`` is imported instead (``PYTHONPATH``)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    samples: list[tuple[float, int, int]] = []
    start = time.time()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((time.time(), *tree_rss(proc.pid)))
                done.wait(POLL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        done.set()
        sampler.join()
    wall = time.time() - start
    return {"exit": code, "wall_s": round(wall, 1), "samples": samples}


def per_step(
    spans: dict[str, list[tuple[float, float]]], samples: list[tuple[float, int, int]]
) -> dict[str, dict[str, Any]]:
    """Wall seconds of each step, and from the samples in its spans the peak RSS (MB) of
    the process tree and of the ``dpl`` process alone (the rest is its children: ffmpeg).

    A step shorter than the sampling period gets the nearest sample after its start.
    """
    steps = {}
    for key, intervals in sorted(spans.items(), key=lambda item: min(item[1])):
        inside = [s for s in samples if any(a <= s[0] <= b for a, b in intervals)]
        if not inside:
            inside = [s for s in samples if s[0] >= min(a for a, _ in intervals)][:1]
        steps[key] = {
            "wall_s": round(sum(b - a for a, b in intervals), 2),
            "peak_rss_mb": round(max(s[1] for s in inside) / MB, 1) if inside else None,
            "peak_main_mb": round(max(s[2] for s in inside) / MB, 1) if inside else None,
        }
    return steps


def disk_use(root: Path) -> dict[str, Any]:
    """Bytes (as MB) per top-level folder of the output dir (``.dagster`` included)."""
    sizes: dict[str, float] = {}
    total = 0
    for child in sorted(root.iterdir()):
        if child.is_dir():
            size = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        else:
            size = child.stat().st_size
        sizes[child.name] = round(size / MB, 2)
        total += size
    return {"per_output_mb": sizes, "total_mb": round(total / MB, 1)}


def measure(
    workdir: Path, minutes: float, keep: bool, source: Path | None = None
) -> dict[str, Any]:
    """One ``dpl run`` of the default graph on the ``minutes`` clip, measured (with the
    ``dpl_assets`` of the checkout ``source`` when given)."""
    commit = git_head(source or REPO)  # before the run: others may commit meanwhile
    inputs = make_clip(workdir, minutes)
    video = next((inputs.parent / "videos").iterdir())
    tag = f"{minutes:g}min" + (f"_{source.name}" if source else "")
    out = workdir / f"out_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    log = workdir / f"run_{tag}.log"
    argv = [
        str(DPL), "run", "--graph", str(DEFAULT_GRAPH), "--inputs", str(inputs),
        "--output_dir", str(out), "--workers", "1",
    ]  # fmt: skip
    print(f"{minutes:g} min: dpl run ... (log {log})", flush=True)
    result = run_sampled(argv, log, REPO, source)
    samples = result.pop("samples")
    report_path = out / "report.json"
    status = None
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        status = {v["video_id"]: v.get("reason") or v["status"] for v in report["videos"]}
    spans = step_spans(out / ".dagster") if (out / ".dagster").is_dir() else {}
    steps = per_step(spans, samples)
    # The whole timeline beside the clips, for a closer look (not in the report).
    timeline = {"samples": samples, "spans": spans}
    (workdir / f"timeline_{tag}.json").write_text(json.dumps(timeline), encoding="utf-8")
    measured = {
        "minutes": minutes,
        "source": commit,
        "frames": round(minutes * 60 * FPS),
        "clip_mb": round(video.stat().st_size / MB, 1),
        "exit": result["exit"],
        "videos": status,
        "wall_s": result["wall_s"],
        "peak_rss_mb": round(max((s[1] for s in samples), default=0) / MB, 1),
        "peak_main_mb": round(max((s[2] for s in samples), default=0) / MB, 1),
        "steps": steps,
        "disk": disk_use(out) if out.is_dir() else None,
        "samples": len(samples),
    }
    if result["exit"] != 0:
        measured["log_tail"] = log.read_text(errors="replace")[-3000:]
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return measured


# --------------------------------------------------------------------------------------
# Growth and report
# --------------------------------------------------------------------------------------


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through (x, y) points: (slope, intercept)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0, mean_y
    k = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    return k, mean_y - k * mean_x


def growth(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per step and overall: peak MB per minute of clip and the extrapolated 60-min peak."""
    ok = [r for r in runs if r["exit"] == 0]
    if len({r["minutes"] for r in ok}) < 2:
        return {}
    out: dict[str, Any] = {}
    keys = sorted({k for r in ok for k in r["steps"]}, key=lambda k: k)
    for key in ["(whole run)", *keys]:
        points = []
        for r in ok:
            peak = (
                r["peak_rss_mb"]
                if key == "(whole run)"
                else r["steps"].get(key, {}).get("peak_rss_mb")
            )
            if peak is not None:
                points.append((r["minutes"], peak))
        if len(points) >= 2:
            k, b = slope(points)
            out[key] = {
                "mb_per_min": round(k, 2),
                f"peak_at_{TARGET_MINUTES}min_mb": round(k * TARGET_MINUTES + b, 0),
            }
    k, b = slope([(r["minutes"], r["wall_s"]) for r in ok])
    out["(whole run)"].update(
        {"wall_s_per_min": round(k, 1), f"wall_at_{TARGET_MINUTES}min_s": round(k * 60 + b)}
    )
    return out


def print_table(runs: list[dict[str, Any]], grow: dict[str, Any]) -> None:
    """Markdown table: per step, wall and peak RSS of each run, growth per minute."""
    ok = [r for r in runs if r["steps"]]
    keys = sorted({k for r in ok for k in r["steps"]})
    head = [f"{r['minutes']:g} min: s / peak MB" for r in ok]
    print("| step | " + " | ".join(head) + " | MB/min | at 60 min |")
    print("|---" * (len(head) + 3) + "|")
    for key in ["(whole run)", *keys]:
        cells = []
        for r in ok:
            if key == "(whole run)":
                cells.append(f"{r['wall_s']:.0f} / {r['peak_rss_mb']:.0f}")
            elif key in r["steps"]:
                step = r["steps"][key]
                cells.append(f"{step['wall_s']:.1f} / {step['peak_rss_mb']}")
            else:
                cells.append("")
        g = grow.get(key, {})
        per_min = g.get("mb_per_min", "")
        at_60 = g.get(f"peak_at_{TARGET_MINUTES}min_mb", "")
        print(f"| {key} | " + " | ".join(cells) + f" | {per_min} | {at_60} |")


def git_head(checkout: Path = REPO) -> str:
    """The checkout's commit, with ``+dirty`` when its ``dpl_assets`` has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--", "dpl_assets"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, nargs="*", default=[TARGET_MINUTES],
        help="clip length(s) in minutes, each one run (default 60; none given with "
        "--include: only merge those reports)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the output folders")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dpl_long_clip",
        help="clips (cached) and outputs (default: /tmp/dpl_long_clip)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON report")
    parser.add_argument(
        "--source", type=Path,
        help="run the dpl_assets of this checkout (e.g. a git worktree of an older commit)",
    )  # fmt: skip
    parser.add_argument(
        "--include", type=Path, nargs="*", default=[],
        help="reports of earlier invocations whose runs join this one's (runs in parallel)",
    )  # fmt: skip
    parser.add_argument("--note", default="", help="a line on the conditions, kept in the report")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = [measure(args.workdir, minutes, args.keep, args.source) for minutes in args.minutes]
    for earlier in args.include:
        runs += json.loads(earlier.read_text(encoding="utf-8"))["runs"]
    runs.sort(key=lambda run: (run["source"], run["minutes"]))
    grow = {
        source: growth([run for run in runs if run["source"] == source])
        for source in sorted({run["source"] for run in runs})
    }
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_head(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "graph": str(DEFAULT_GRAPH.relative_to(REPO)),
        "clip": f"{WIDTH}x{HEIGHT} {FPS} fps H.264 + AAC, a {BASE_SECONDS} s clip looped",
        "poll_s": POLL_S,
        "note": args.note,
        "goal_mb": GOAL_MB,
        "runs": runs,
        "growth": grow,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    for source, source_growth in grow.items():
        print(f"\ndpl_assets at {source}:")
        print_table([run for run in runs if run["source"] == source], source_growth)
    print(f"wrote {args.output}")
    if any(r["exit"] != 0 for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
