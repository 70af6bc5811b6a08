"""Benchmark: SegmentNode's planning in frames/s beside bare numpy, same inputs.

SegmentNode has no library of its own: its work is :func:`dpl_assets.nodes.segments.
plan_segments` over per-frame flags. Input: a 60-minute clip at 25 fps (90,000 frames)
with a no-face flag (2 s gaps every ~40 s), a no-speech flag (1 s pauses every ~7 s) and
scene cuts every ~60 s. "Bare" is what a script would do with numpy alone: the usable
mask, its runs (``np.diff``) cut at the scene cuts and dropped below ``min_seconds``
(no reasons, no seconds per reason, no splitting). Runs alternate, ``--repeats`` each;
medians.

    nice .venv/bin/python benchmarks/curation_segments.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from dpl_assets.nodes.segments import NO_FACE, NO_SPEECH, plan_segments

RESULTS = Path(__file__).parent / "results" / "curation_segments.json"
FPS = 25.0


def inputs(frames: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    times = np.arange(frames) / FPS
    flags = {NO_FACE: np.zeros(frames, bool), NO_SPEECH: np.zeros(frames, bool)}
    for reason, every_s, length_s in ((NO_FACE, 40, 2), (NO_SPEECH, 7, 1)):
        for start in np.cumsum(rng.uniform(0.5, 1.5, frames) * every_s * FPS).astype(int):
            if start >= frames:
                break
            flags[reason][start : start + int(length_s * FPS)] = True
    cuts = [int(c) for c in np.cumsum(rng.uniform(0.5, 1.5, 200) * 60 * FPS) if c < frames]
    return times, flags, cuts


def bare(flags: dict[str, np.ndarray], cuts: list[int], min_frames: int) -> np.ndarray:
    usable = ~np.logical_or.reduce(list(flags.values()))
    usable[cuts] = False  # a cut frame starts a new run: end the run before it
    starts = np.flatnonzero(np.diff(np.concatenate([[0], usable.view(np.int8), [0]])))
    runs = starts.reshape(-1, 2)
    return runs[runs[:, 1] - runs[:, 0] >= min_frames]


def timed(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    frames = int(args.minutes * 60 * FPS)
    times, flags, cuts = inputs(frames)
    node_s, bare_s = [], []
    for _ in range(args.repeats):
        node_s.append(timed(lambda: plan_segments(times, flags, cuts), 1))
        bare_s.append(timed(lambda: bare(flags, cuts, int(FPS)), 1))
    plan = plan_segments(times, flags, cuts)
    node, reference = statistics.median(node_s), statistics.median(bare_s)
    report = {
        "benchmark": "curation_segments",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "frames": frames,
        "repeats": args.repeats,
        "segments_kept": len(plan.kept),
        "dropped_spans": len(plan.dropped),
        "node_frames_per_s": round(frames / node, 1),
        "bare_numpy_frames_per_s": round(frames / reference, 1),
        "node_over_bare": round(reference / node, 3),
        "node_s": [round(s, 4) for s in node_s],
        "bare_s": [round(s, 4) for s in bare_s],
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
