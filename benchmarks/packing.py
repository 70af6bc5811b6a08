"""Benchmark: packing throughput, file size per minute of video, and window read latency.

A minute (by default) of 25 fps 512x512 video is synthesized from a real photo
(``skimage.data.astronaut``) drifting by sub-pixel shifts with a slow brightness change,
and written once as the pipeline's ``images`` stack (JPEG q95, ``ImageStackWriter``).
Then, for each layout (``vlen``, ``filter32019``) and image format/quality (JPEG 75, JPEG
95, PNG), in one run:

- pack: ``pack_video`` from that stack (+ landmarks, boxes, wav2vec, volume) in frames/s;
  JPEG q95 matches the source, so its bytes are copied; the others decode and re-encode;
- encode: ``ImageDatasetWriter.append`` of RGB frames (a sample held in memory) in
  frames/s, beside bare ``cv2.imencode`` of the same frames;
- read: every frame decoded in order through ``open_images`` in frames/s, beside bare
  ``cv2.imdecode`` of the same bytes already in memory;
- size: the pack file's MB per minute of video;
- random access: ``PackedWindows.window_at`` of random 16-frame windows (images alone, and
  images + landmarks + wav2vec), median and p95 ms, warm page cache.

    .venv/bin/python benchmarks/packing.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
from skimage.data import astronaut

from dpl_assets.packing.layouts import ImageDatasetWriter, open_images
from dpl_assets.packing.reader import PackedWindows
from dpl_assets.packing.resample import feature_times
from dpl_assets.packing.video_pack import PackOptions, pack_video
from dpl_assets.storage.image_stack import ImageStackWriter

FPS = 25
SIZE = 512
CONFIGS = [  # (name, layout, image format, JPEG quality)
    ("vlen jpeg q75", "vlen", "jpeg", 75),
    ("vlen jpeg q95", "vlen", "jpeg", 95),
    ("vlen png", "vlen", "png", 95),
    ("filter32019 jpeg q75", "filter32019", "jpeg", 75),
    ("filter32019 jpeg q95", "filter32019", "jpeg", 95),
]


def synth_frame(photo: np.ndarray, index: int) -> np.ndarray:
    """The photo shifted by a smooth sub-pixel drift (reflected borders), brightness +-6 %:
    realistic texture and motion, so JPEG/PNG sizes are like a real clip's."""
    dx, dy = 12 * np.sin(index / 37), 8 * np.sin(index / 23)
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(photo, shift, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
    gain = 1.0 + 0.06 * np.sin(index / 50)
    return np.clip(moved.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def write_source(path: Path, photo: np.ndarray, count: int) -> None:
    """The pipeline's ``images`` stack of ``count`` synthetic frames (JPEG q95), streamed."""
    with ImageStackWriter(path, "images", quality=95) as stack:
        for index in range(count):  # streamed: one frame in memory at a time
            stack.append(synth_frame(photo, index), index / FPS)


def synth_arrays(
    count: int, audio_steps: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(frame arrays of ``count`` frames, audio features of ``audio_steps`` 50 Hz steps)."""
    steps = feature_times(audio_steps)
    arrays = {
        "landmarks": rng.normal(200, 50, (count, 68, 2)).astype(np.float32),
        "bboxes": rng.integers(0, SIZE, (count, 4)),
        "head_pose": rng.normal(size=(count, 6)).astype(np.float32),
    }
    audio = {
        "wav2vec": rng.normal(size=(steps.size, 256)).astype(np.float32),
        "volume": rng.uniform(size=steps.size).astype(np.float32),
    }
    return arrays, audio


def bench_encode(path: Path, options: PackOptions, sample: list[np.ndarray]) -> dict[str, float]:
    """``ImageDatasetWriter.append`` of ``sample`` (RGB frames in memory) into ``path``,
    beside bare ``cv2.imencode``: frames/s."""
    with h5py.File(path, "w") as f:
        writer = ImageDatasetWriter(
            f, "images", layout=options.layout, image_format=options.image_format,
            quality=options.jpeg_quality,
        )  # fmt: skip
        t_encode, _ = timed(lambda: [writer.append(x) for x in sample])
        writer.finish()
    ext, params = (
        (".jpg", [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])
        if options.image_format == "jpeg"
        else (".png", [cv2.IMWRITE_PNG_COMPRESSION, 3])
    )
    t_bare_encode, _ = timed(
        lambda: [cv2.imencode(ext, cv2.cvtColor(x, cv2.COLOR_RGB2BGR), params) for x in sample]
    )
    return {
        "encode_fps": rate(len(sample), t_encode),
        "bare_encode_fps": rate(len(sample), t_bare_encode),
    }


def bench_read(path: Path, count: int, sample: int) -> dict[str, float]:
    """Every frame of ``path``'s images decoded in order through ``open_images``, beside
    bare ``cv2.imdecode`` of the first ``sample`` frames' bytes in memory: frames/s."""
    with h5py.File(path, "r") as f:
        images = open_images(f["images"])
        t_read, decoded = timed(lambda: sum(1 for _ in images))
        assert decoded == count
        in_memory = [images.encoded(i) for i in range(sample)]
    t_bare_decode, _ = timed(
        lambda: [
            cv2.cvtColor(
                cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            )
            for b in in_memory
        ]
    )
    return {"read_fps": rate(count, t_read), "bare_decode_fps": rate(sample, t_bare_decode)}


def window_latency(
    path: Path, count: int, windows: int, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """``PackedWindows.window_at`` of ``windows`` random 16-frame windows: median and p95 ms,
    for images alone and images + landmarks + wav2vec."""
    latency = {}
    window_keys = {
        "images": ["images"],
        "images+landmarks+wav2vec": ["images", "landmarks", "wav2vec"],
    }
    for label, keys in window_keys.items():
        dataset = PackedWindows([path], window=16, keys=keys)
        dataset.window_at("bench", 0)  # open the file once, outside the timing
        starts = rng.integers(0, count - 16 + 1, windows)
        times_ms = []
        for start in starts:
            t, _ = timed(lambda start=start, d=dataset: d.window_at("bench", int(start)))
            times_ms.append(t * 1000)
        dataset.close()
        latency[label] = {
            "median_ms": round(float(np.median(times_ms)), 2),
            "p95_ms": round(float(np.percentile(times_ms, 95)), 2),
        }
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sample", type=int, default=200, help="frames in memory for encode")
    parser.add_argument("--windows", type=int, default=200, help="random windows timed")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/packing.json"))
    args = parser.parse_args()
    count = round(args.seconds * FPS)
    minutes = count / FPS / 60
    photo = astronaut()
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        source = scratch / "images.h5"

        t_source, _ = timed(lambda: write_source(source, photo, count))
        arrays, audio = synth_arrays(count, int(args.seconds * 50), rng)
        sample = [synth_frame(photo, index) for index in range(min(args.sample, count))]
        report: dict[str, Any] = {
            "clip": {"width": SIZE, "height": SIZE, "fps": FPS, "frames": count,
                     "seconds": args.seconds},
            "source_stack": {"write_fps": rate(count, t_source),
                             "mb_per_minute": round(source.stat().st_size / 2**20 / minutes, 1)},
            "configs": {},
        }  # fmt: skip

        for name, layout, image_format, quality in CONFIGS:
            options = PackOptions(image_format=image_format, jpeg_quality=quality, layout=layout)
            out = scratch / f"{name.replace(' ', '_')}.h5"
            t_pack, summary = timed(
                lambda out=out, options=options: pack_video(
                    out,
                    video_id="bench",
                    frame_times=np.arange(count) / FPS,
                    image_stacks={"images": source},
                    arrays=arrays,
                    audio_features=audio,
                    options=options,
                )
            )
            report["configs"][name] = {
                "pack_fps": rate(count, t_pack),
                "copied_bytes": "images" in summary.copied,
                **bench_encode(scratch / "encode.h5", options, sample),
                **bench_read(out, count, len(sample)),
                "file_mb": round(summary.bytes / 2**20, 1),
                "mb_per_minute": round(summary.bytes / 2**20 / minutes, 1),
                "window16_latency": window_latency(out, count, args.windows, rng),
            }
            print(name, json.dumps(report["configs"][name]), flush=True)
            out.unlink()

    report["machine"] = {
        "cpus": os.cpu_count(),
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "opencv": cv2.__version__,
    }
    print(json.dumps(report, indent=1))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
