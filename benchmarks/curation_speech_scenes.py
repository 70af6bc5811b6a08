"""Benchmark: SpeechNode and SceneCutNode beside their bare libraries, on the same input.

- speech: seconds of audio per second of :func:`dpl_assets.nodes.speech.speech_probability`
  (Silero's TorchScript ``audio_forward`` over 512-sample windows, then the 20 ms steps)
  against silero-vad's own ``get_speech_timestamps`` (its Python loop over the windows,
  then its spans), both on one torch thread (what ``silero_vad`` sets on import), on
  real speech (the LibriVox readings of Debian ``pocketsphinx-testdata``, joined and
  repeated);
- scenes: frames per second of :func:`dpl_assets.nodes.scenes.detect_cuts` on the frames
  of ``DecodeRecipe().frames`` (PyAV decode + the content detector)
  against ``scenedetect.detect(path, ContentDetector())`` (its OpenCV backend: decode
  + the same detector), on an H.264 clip of two real photos cut every few seconds.

Both sides alternate, ``--repeats`` times each; the report gives the medians.

    nice .venv/bin/python benchmarks/curation_speech_scenes.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile
from bench_media import READINGS, h264_writer, missing_packages

from dpl_assets.media.frames import DecodeRecipe
from dpl_assets.nodes.scenes import detect_cuts
from dpl_assets.nodes.speech import SileroVad, speech_probability

RESULTS = Path(__file__).parent / "results" / "curation_speech_scenes.json"
RATE = 16_000


def reading(seconds: float) -> np.ndarray:
    """The LibriVox readings joined, repeated to ``seconds`` of 16 kHz float32."""
    parts = [soundfile.read(path, dtype="float32")[0] for path in READINGS]
    one = np.concatenate(parts)
    return np.resize(one, round(seconds * RATE))


def shots_clip(path: Path, seconds: float, shot_s: float, size: tuple[int, int]) -> list[int]:
    """An H.264 clip alternating between two real photos every ``shot_s``, each panning;
    returns the frames where a shot starts (the expected cuts)."""
    from matplotlib import cbook
    from PIL import Image
    from skimage.data import astronaut

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as image:
        photos = [astronaut(), np.asarray(image.convert("RGB"))]
    fps = 25
    writer = h264_writer(path, size, fps)
    assert writer.stdin is not None
    per_shot = round(shot_s * fps)
    for index in range(round(seconds * fps)):
        photo = photos[(index // per_shot) % 2]
        moved = np.roll(photo, round(6 * np.sin(index / 6)), axis=1)
        writer.stdin.write(cv2.resize(moved, size, interpolation=cv2.INTER_AREA).tobytes())
    writer.stdin.close()
    writer.wait()
    return list(range(per_shot, round(seconds * fps), per_shot))


def alternate(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each side, run in turn ``repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return times


def bench_speech(seconds: float, repeats: int) -> dict[str, Any]:
    import torch
    from silero_vad import get_speech_timestamps

    wav = reading(seconds)
    vad = SileroVad.acquire()  # one torch thread, as silero_vad's import sets it
    model = vad.module
    speech_probability(vad, wav[: 5 * RATE])  # TorchScript's first runs optimise the graph
    audio = torch.from_numpy(wav)
    times = alternate(
        {
            "node": lambda: speech_probability(vad, wav),
            "bare_get_speech_timestamps": lambda: get_speech_timestamps(audio, model),
        },
        repeats,
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "audio_s": seconds,
        "torch_threads": torch.get_num_threads(),
        "seconds": times,
        "audio_s_per_s": {name: round(seconds / value, 1) for name, value in medians.items()},
        "node_over_bare": round(medians["bare_get_speech_timestamps"] / medians["node"], 2),
    }


def bench_scenes(seconds: float, size: tuple[int, int], repeats: int) -> dict[str, Any]:
    import scenedetect

    with tempfile.TemporaryDirectory() as scratch:
        clip = Path(scratch) / "shots.mp4"
        expected = shots_clip(clip, seconds, 4.0, size)
        found: dict[str, Any] = {}

        def node() -> None:
            frames = (frame.rgb for frame in DecodeRecipe().frames(clip))
            found["node"], found["frames"] = detect_cuts(frames, 25.0)

        def bare() -> None:
            scenes = scenedetect.detect(str(clip), scenedetect.ContentDetector())
            found["bare_detect"] = [start.frame_num for start, _ in scenes[1:]]

        times = alternate({"node": node, "bare_detect": bare}, repeats)
    frames = found["frames"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "clip": f"{size[0]}x{size[1]} H.264, {seconds:g} s, {frames} frames, a cut every 4 s",
        "seconds": times,
        "frames_per_s": {name: round(frames / value, 1) for name, value in medians.items()},
        "node_over_bare": round(medians["bare_detect"] / medians["node"], 2),
        "cuts": {"expected": expected, "node": found["node"], "bare_detect": found["bare_detect"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-seconds", type=float, default=60.0)
    parser.add_argument("--video-seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if missing := missing_packages(["pocketsphinx-testdata"]):
        raise SystemExit(f"install the Debian packages {missing} (scripts/setup.sh --bench)")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "speech": bench_speech(args.audio_seconds, args.repeats),
        "scenes": bench_scenes(args.video_seconds, tuple(args.size), args.repeats),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
