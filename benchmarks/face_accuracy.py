"""Benchmark: the face stage in tracking mode against static mode (the output before it).

For each clip, ``FaceAnalyzer.analyze`` (detect, landmarks, tracking: the whole face stage,
decode excluded: frames are decoded into memory first) runs in ``landmark_mode="static"``
(the detector and the static mesh on every frame) and in ``"tracking"`` for each
``--detect-every``, alternating, ``--repeats`` times; measured per mode:

- frames/s (wall, median of the repeats) and CPU frames/s (process CPU time);
- landmarks against static: the per-frame mean distance of the 68 points (px), its mean
  and 95th percentile over the frames both found, and the same as % of the interocular
  distance (eye centre to eye centre of static's points, per frame);
- jitter of each: mean distance of the 68 points (and of the box corners) from a
  Savitzky-Golay fit (15 frames, order 2) over runs of at least 15 frames with a face;
- faces found (frames with a face) and tracks seen; identity: the followed face is the
  same one, i.e. static's and tracking's boxes overlap (IoU >= 0.5) on every frame both
  found;
- frames the detector ran on.

Clips: the benchmark clips (640x480 25 fps talking-head clips, ``--clips``; made by
``make_bench_clips.sh OUT 4 8`` of the throughput benchmark) and the multi-face clips of
the face tests (``dpl_assets_tests/test_faces.py``: two faces, a face entering, two faces
passing side by side, a face vanishing for 4 frames). Also timed once per benchmark
clip: bare mediapipe FaceMesh in tracking mode on the whole frame (the bare script's
landmarks).

    .venv/bin/python benchmarks/face_accuracy.py --clips '/tmp/bench/clips/clip_00[1-4].mp4'
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets.media.frames import decode_frames
from dpl_assets.nodes.face_tracking import FaceTrackResult, box_iou
from dpl_assets.nodes.faces import FaceAnalyzer

SAVGOL_WINDOW, SAVGOL_ORDER = 15, 2


def test_clips() -> dict[str, list[np.ndarray]]:
    """The face tests' synthetic clips (numpy frames, 480x360)."""
    from dpl_assets_tests import test_faces as t

    return {
        "test:two_faces": t.two_face_clip(40),
        "test:face_entering": t.entering_clip(40, 13),
        "test:side_by_side": t.crossing_clip(30),
        "test:face_vanishes": t.gap_clip(),
        "test:drifting": t.moving_clip(20),
    }


def decode(path: str) -> list[np.ndarray]:
    return [frame.rgb for frame in decode_frames(Path(path))]


def timed_runs(
    analyzer: FaceAnalyzer, frames: list[np.ndarray], modes: dict[str, dict], repeats: int
) -> tuple[dict[str, FaceTrackResult], dict[str, list[tuple[float, float]]]]:
    """Each mode ``repeats`` times, alternating; the last result and (wall, cpu) seconds."""
    results: dict[str, FaceTrackResult] = {}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    for _ in range(repeats):
        for name, options in modes.items():
            wall, cpu = time.perf_counter(), time.process_time()
            results[name] = analyzer.analyze(frames, **options)
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return results, times


def runs_of(mask: np.ndarray, length: int) -> list[slice]:
    """Runs of True at least ``length`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a >= length]


def jitter(points: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean distance (px) of points (N, K, 2) from their Savitzky-Golay fit over time."""
    from scipy.signal import savgol_filter

    residuals = []
    for run in runs_of(mask, SAVGOL_WINDOW):
        part = points[run].astype(np.float64)
        fit = savgol_filter(part, SAVGOL_WINDOW, SAVGOL_ORDER, axis=0)
        residuals.append(np.linalg.norm(part - fit, axis=-1).mean(axis=-1))
    return round(float(np.concatenate(residuals).mean()), 3) if residuals else None


def corners(result: FaceTrackResult) -> np.ndarray:
    return result.raw_bboxes[:, :4].reshape(-1, 2, 2)


def compare(result: FaceTrackResult, static: FaceTrackResult) -> dict[str, Any]:
    """Accuracy of ``result`` against ``static`` (see the module docstring)."""
    both = result.detected & static.detected
    distance = np.linalg.norm(result.landmarks - static.landmarks, axis=-1).mean(axis=-1)[both]
    eyes = static.landmarks[:, 36:42].mean(axis=1) - static.landmarks[:, 42:48].mean(axis=1)
    percent = 100 * distance / np.linalg.norm(eyes, axis=-1)[both]
    same_face = [
        box_iou(result.raw_bboxes[i], static.raw_bboxes[i]) >= 0.5 for i in np.flatnonzero(both)
    ]
    return {
        "frames_with_face": int(result.detected.sum()),
        "faces_found_equal": bool((result.detected == static.detected).all()),
        "tracks_seen": result.info["tracks_seen"],
        "same_followed_face": bool(all(same_face)),
        "landmark_diff_px": {
            "mean": round(float(distance.mean()), 3) if both.any() else None,
            "p95": round(float(np.percentile(distance, 95)), 3) if both.any() else None,
            "max": round(float(distance.max()), 3) if both.any() else None,
        },
        "landmark_diff_pct_interocular": {
            "mean": round(float(percent.mean()), 3) if both.any() else None,
            "p95": round(float(np.percentile(percent, 95)), 3) if both.any() else None,
        },
        "within_1px_mean": bool(both.any() and distance.mean() <= 1.0),
        "jitter_px": jitter(result.landmarks, result.detected),
        "box_jitter_px": jitter(corners(result), result.detected),
        "detector_frames": result.info["detector_frames"],
    }


def bare_facemesh_fps(frames: list[np.ndarray]) -> float:
    """Frames/s of mediapipe FaceMesh (tracking mode, refined) on the whole frame."""
    import mediapipe as mp

    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=False, max_num_faces=1, refine_landmarks=True
    ) as mesh:
        mesh.process(frames[0])
        started = time.perf_counter()
        for frame in frames:
            mesh.process(frame)
    return round(len(frames) / (time.perf_counter() - started), 1)


def measure_clip(
    analyzer: FaceAnalyzer, frames: list[np.ndarray], strides: list[int], repeats: int
) -> dict[str, Any]:
    modes: dict[str, dict] = {"static": {"landmark_mode": "static"}}
    modes.update(
        {f"tracking_{k}": {"landmark_mode": "tracking", "detect_every": k} for k in strides}
    )
    results, times = timed_runs(analyzer, frames, modes, repeats)
    static = results["static"]
    report: dict[str, Any] = {"frames": len(frames), "height_width": list(frames[0].shape[:2])}
    for name, result in results.items():
        wall = float(np.median([t[0] for t in times[name]]))
        cpu = float(np.median([t[1] for t in times[name]]))
        entry = {"fps": round(len(frames) / wall, 1), "cpu_fps": round(len(frames) / cpu, 1)}
        if name == "static":
            entry.update(
                frames_with_face=int(static.detected.sum()),
                tracks_seen=static.info["tracks_seen"],
                jitter_px=jitter(static.landmarks, static.detected),
                box_jitter_px=jitter(corners(static), static.detected),
            )
        else:
            entry.update(compare(result, static))
        report[name] = entry
    return report


def summarize(clips: dict[str, dict], strides: list[int], prefix: str) -> dict[str, Any]:
    """Per mode over the clips whose name starts with ``prefix``: frames/s over all frames,
    frame-weighted landmark differences, worst p95, jitter means, and all-clip flags."""
    chosen = {name: clip for name, clip in clips.items() if name.startswith(prefix)}
    if not chosen:
        return {}
    frames = sum(clip["frames"] for clip in chosen.values())

    def total_fps(mode: str, key: str) -> float:
        return round(frames / sum(clip["frames"] / clip[mode][key] for clip in chosen.values()), 1)

    def mean(mode: str, get: Callable[[dict], float | None]) -> float | None:
        values = [get(clip[mode]) for clip in chosen.values()]
        kept = [v for v in values if v is not None]
        return round(float(np.mean(kept)), 3) if kept else None

    summary: dict[str, Any] = {
        "static": {
            "fps": total_fps("static", "fps"),
            "cpu_fps": total_fps("static", "cpu_fps"),
            "jitter_px": mean("static", lambda m: m["jitter_px"]),
            "box_jitter_px": mean("static", lambda m: m["box_jitter_px"]),
        }
    }
    for k in strides:
        mode = f"tracking_{k}"
        summary[mode] = {
            "fps": total_fps(mode, "fps"),
            "cpu_fps": total_fps(mode, "cpu_fps"),
            "speedup_wall": round(total_fps(mode, "fps") / summary["static"]["fps"], 2),
            "speedup_cpu": round(total_fps(mode, "cpu_fps") / summary["static"]["cpu_fps"], 2),
            "landmark_diff_px_mean": mean(mode, lambda m: m["landmark_diff_px"]["mean"]),
            "landmark_diff_px_p95_worst": max(
                (c[mode]["landmark_diff_px"]["p95"] or 0.0) for c in chosen.values()
            ),
            "landmark_diff_pct_interocular_mean": mean(
                mode, lambda m: m["landmark_diff_pct_interocular"]["mean"]
            ),
            "jitter_px": mean(mode, lambda m: m["jitter_px"]),
            "box_jitter_px": mean(mode, lambda m: m["box_jitter_px"]),
            "faces_found_equal_all": all(c[mode]["faces_found_equal"] for c in chosen.values()),
            "same_followed_face_all": all(c[mode]["same_followed_face"] for c in chosen.values()),
            "within_1px_mean_all": all(c[mode]["within_1px_mean"] for c in chosen.values()),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default="/tmp/bench/clips/clip_00[1-4].mp4", help="glob")
    parser.add_argument("--detect-every", default="1,3,5,10,20", help="tracking strides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-test-clips", action="store_true")
    parser.add_argument(
        "--report", type=Path, default=Path("benchmarks/results/face_accuracy.json")
    )
    args = parser.parse_args()
    strides = [int(k) for k in args.detect_every.split(",")]
    paths = sorted(glob.glob(args.clips))
    if not paths:
        parser.error(f"no clips match {args.clips}: make them with make_bench_clips.sh OUT 4 8")
    clips: dict[str, dict] = {}
    load_before = os.getloadavg()
    with FaceAnalyzer() as analyzer:
        for path in paths:
            frames = decode(path)
            clips[Path(path).name] = measure_clip(analyzer, frames, strides, args.repeats)
            clips[Path(path).name]["bare_facemesh_tracking_fps"] = bare_facemesh_fps(frames)
            print(Path(path).name, json.dumps(clips[Path(path).name]["static"]), flush=True)
        if not args.no_test_clips:
            for name, frames in test_clips().items():
                clips[name] = measure_clip(analyzer, frames, strides, 1)
                print(name, flush=True)
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "repeats": args.repeats,
        "summary_bench_clips": summarize(clips, strides, "clip_"),
        "summary_test_clips": summarize(clips, strides, "test:"),
        "clips": clips,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "clips"}, indent=1))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
