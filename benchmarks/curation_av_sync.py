"""Benchmark: AvSyncNode's backends in frames/s beside their bare libraries, same inputs.

- ``correlation``: :func:`dpl_assets.nodes.av_sync.sync_tracks` (differences,
  standardization, Pearson correlation per lag over the frames both signals have, best
  lag and confidence) of one face track against the audio activity, over a 10-minute
  clip's signals (15 000 frames at 25 fps: the talking astronaut's mouth opening and the
  speech's loudness, tiled), beside bare ``np.correlate`` of the same two standardized
  difference signals restricted to the same +-15 lags;
- ``syncnet``: :func:`dpl_assets.nodes.syncnet.sync_tracks_syncnet` (face crops, MFCCs,
  both embeddings, the distance curve) on 50 frames of the talking astronaut (256 x 256)
  with stand-in weights (random, in the ``syncnet_v2`` layout), beside the bare torch
  module (``forward_lip`` on the same 46 five-frame crop windows and ``forward_aud`` on
  the same 45 MFCC windows, batch 16; the crops and MFCCs made outside its timing).

Runs alternate node and bare, ``--repeats`` times each; medians are reported.

    nice .venv/bin/python benchmarks/curation_av_sync.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dpl_assets.nodes.av_sync import _standardized_steps, sync_tracks
from dpl_assets_tests import talking_face

RESULTS = Path(__file__).parent / "results" / "curation_av_sync.json"
MAX_LAG = 15


def alternate(
    node: Callable[[], Any], bare: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``node()`` and ``bare()``, run alternately ``repeats`` times."""
    node(), bare()  # warm-up: imports, caches
    node_s, bare_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        node()
        node_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare()
        bare_s.append(time.perf_counter() - start)
    return statistics.median(node_s), statistics.median(bare_s)


def correlation_signals(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Mouth opening and loudness per frame, ``frames`` long, from the test media."""
    voice = talking_face.speech("dashwood")
    clip_frames = len(voice) // talking_face.SAMPLES_PER_FRAME
    mouth = talking_face.mouth_opening_of(voice, clip_frames)
    loud = np.abs(voice[: clip_frames * 640]).reshape(clip_frames, 640).mean(axis=1)
    reps = frames // clip_frames + 1
    return np.tile(mouth, reps)[:frames] * 0.3, np.tile(loud, reps)[:frames]


def bench_correlation(repeats: int, frames: int) -> dict[str, Any]:
    mouth, activity = correlation_signals(frames)

    def bare() -> int:
        m, a = _standardized_steps(mouth)[1:], _standardized_steps(activity)[1:]
        full = np.correlate(a, m, mode="full")  # index len(m) - 1 + k: lag k
        return int(np.argmax(full[len(m) - 1 - MAX_LAG : len(m) + MAX_LAG])) - MAX_LAG

    node_lag = sync_tracks([mouth], activity, MAX_LAG)[0][0].best_lag
    assert node_lag == bare() == 0, (node_lag, bare())
    node_s, bare_s = alternate(lambda: sync_tracks([mouth], activity, MAX_LAG), bare, repeats)
    return {
        "frames": frames,
        "node_s": round(node_s, 5),
        "bare_s": round(bare_s, 5),
        "node_frames_per_s": round(frames / node_s),
        "bare_frames_per_s": round(frames / bare_s),
    }


class FrameStack:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames

    def frame_times(self) -> np.ndarray:
        return np.arange(len(self.frames)) / 25.0

    @contextlib.contextmanager
    def open(self) -> Iterator[Iterator[np.ndarray]]:
        yield iter(self.frames)


def bench_syncnet(repeats: int, frames: int) -> dict[str, Any]:
    import torch

    from dpl_assets.nodes.syncnet import (
        BATCH_WINDOWS,
        SyncNetS,
        _smoothed_boxes,
        face_crop,
        load_syncnet,
        mfcc,
        sync_tracks_syncnet,
    )

    torch.manual_seed(0)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(scratch) / "syncnet_v2.model"
        torch.save(SyncNetS().state_dict(), weights)
        model = load_syncnet(weights, "cpu")
    face = talking_face._astronaut()
    voice = talking_face.speech("dashwood")
    pictures = [face.frame(o) for o in talking_face.mouth_opening_of(voice, frames)]
    wav = talking_face.shifted(voice, frames, 0)
    boxes = np.tile(np.array([80, 60, 176, 170, 0.9], np.float32), (frames, 1))
    stack = FrameStack(pictures)

    # The bare module's inputs, made once outside the timing: crops and MFCC windows.
    centres, halves = _smoothed_boxes(boxes)
    crops = np.stack(
        [face_crop(p, c, float(h)) for p, c, h in zip(pictures, centres, halves, strict=True)]
    )
    lips = np.stack([crops[i : i + 5] for i in range(frames - 4)])
    coefficients = mfcc(wav)
    usable = (len(coefficients) - 20) // 4 + 1  # audio windows inside the audio
    auds = np.stack([coefficients[4 * i : 4 * i + 20].T for i in range(usable)])
    lip_tensor = torch.from_numpy(lips).permute(0, 4, 1, 2, 3).float()
    aud_tensor = torch.from_numpy(np.ascontiguousarray(auds[:, None], np.float32))

    @torch.inference_mode()
    def bare() -> None:
        for i in range(0, len(lip_tensor), BATCH_WINDOWS):
            model.net.forward_lip(lip_tensor[i : i + BATCH_WINDOWS])
        for i in range(0, len(aud_tensor), BATCH_WINDOWS):
            model.net.forward_aud(aud_tensor[i : i + BATCH_WINDOWS])

    node_s, bare_s = alternate(
        lambda: sync_tracks_syncnet(model, stack, [boxes], wav, MAX_LAG), bare, repeats
    )
    return {
        "frames": frames,
        "lip_windows": len(lips),
        "audio_windows": len(auds),
        "node_s": round(node_s, 3),
        "bare_s": round(bare_s, 3),
        "node_frames_per_s": round(frames / node_s, 1),
        "bare_frames_per_s": round(frames / bare_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--correlation-frames", type=int, default=15_000)
    parser.add_argument("--syncnet-frames", type=int, default=50)
    args = parser.parse_args()
    report = {
        "correlation": bench_correlation(args.repeats * 4, args.correlation_frames),
        "syncnet": bench_syncnet(args.repeats, args.syncnet_frames),
        "repeats": args.repeats,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
