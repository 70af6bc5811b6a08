"""Benchmark: AlignedCropNode's and FrameQualityNode's work per frame beside bare OpenCV.

On a real face photo (Grace Hopper) drifting on a 1280x720 canvas, frames held in memory
(decoding and JPEG writing are the other stages, ``vision_stages.py``), landmarks found
once beforehand, measures frames/s of:

- aligned: ``alignment_affines`` (five points, smoothing 5, skimage's Umeyama fit) and
  ``warp_aligned`` to 256x256 (cubic)  vs  bare ``cv2.warpAffine`` of the same frames by
  the same matrices;
- quality: ``quality_table`` (fit, warp to 112x112, grey, Laplacian variance, mean luma,
  face size; pose given)  vs  bare ``cv2.warpAffine`` to 112 + ``cv2.cvtColor`` +
  ``cv2.Laplacian(...).var()``, and ``cv2.Laplacian`` alone on the grey crops.

Ours and bare alternate ``--rounds`` times; medians are reported.

    nice .venv/bin/python benchmarks/curation_aligned_quality.py --frames 200 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from dpl_assets.nodes.aligned_crops import alignment_affines, warp_aligned
from dpl_assets.nodes.faces import FaceAnalyzer
from dpl_assets.nodes.frame_quality import quality_table
from dpl_assets.samples import face_frames

WIDTH, HEIGHT, FACE = 1280, 720, 400
RESULTS = Path(__file__).parent / "results" / "curation_aligned_quality.json"


def canvas_frames(count: int) -> list[np.ndarray]:
    """``count`` 1280x720 frames: the drifting face (400 px) on a grey canvas."""
    faces = face_frames(count / 25, 25, size=FACE)
    frames = []
    for index, face in enumerate(faces):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        x = 440 + round(150 * np.sin(index / 30))
        frame[160 : 160 + FACE, x : x + FACE] = face
        frames.append(frame)
    return frames


def seconds_of(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core each, as the pipeline's worker threads share them

    frames = canvas_frames(args.frames)
    with FaceAnalyzer() as analyzer:
        landmarks = analyzer.analyze(frames).landmarks
    poses = np.zeros((len(frames), 2))
    affines_256 = alignment_affines(landmarks, "arcface", 256, 5)
    affines_112 = alignment_affines(landmarks, "arcface", 112)
    crops_112 = [
        cv2.cvtColor(cv2.warpAffine(f, a, (112, 112)), cv2.COLOR_RGB2GRAY)
        for f, a in zip(frames, affines_112, strict=True)
    ]

    def ours_aligned() -> None:
        affines = alignment_affines(landmarks, "arcface", 256, 5)
        for frame, affine in zip(frames, affines, strict=True):
            warp_aligned(frame, affine, 256, "cubic")

    def bare_aligned() -> None:
        for frame, affine in zip(frames, affines_256, strict=True):
            cv2.warpAffine(frame, affine, (256, 256), flags=cv2.INTER_CUBIC)

    def ours_quality() -> None:
        quality_table(frames, landmarks, poses, 112)

    def bare_quality() -> None:
        for frame, affine in zip(frames, affines_112, strict=True):
            grey = cv2.cvtColor(cv2.warpAffine(frame, affine, (112, 112)), cv2.COLOR_RGB2GRAY)
            cv2.Laplacian(grey, cv2.CV_64F).var()

    def bare_laplacian() -> None:
        for grey in crops_112:
            cv2.Laplacian(grey, cv2.CV_64F).var()

    stages = {
        "aligned_crop_256": {"ours": ours_aligned, "bare_warpaffine": bare_aligned},
        "frame_quality_112": {
            "ours": ours_quality,
            "bare_warp_grey_laplacian": bare_quality,
            "bare_laplacian_only": bare_laplacian,
        },
    }
    times: dict[str, dict[str, list[float]]] = {
        stage: {name: [] for name in runs} for stage, runs in stages.items()
    }
    for _ in range(args.rounds):  # alternate, so drifts of the shared machine hit all alike
        for stage, runs in stages.items():
            for name, run in runs.items():
                times[stage][name].append(seconds_of(run))
    fit_s = statistics.median(
        seconds_of(lambda: alignment_affines(landmarks, "arcface", 256, 5)) for _ in range(3)
    )
    report = {
        "frames": len(frames),
        "frame_size": [WIDTH, HEIGHT],
        "face_px": FACE,
        "rounds": args.rounds,
        "frames_per_s": {
            stage: {
                name: round(len(frames) / statistics.median(seconds), 1)
                for name, seconds in runs.items()
            }
            for stage, runs in times.items()
        },
        "fit_only_frames_per_s": round(len(frames) / fit_s, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
