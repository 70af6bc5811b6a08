"""The bare-library path of the end-to-end benchmark: the same work as the equal-work graph,
written directly against the libraries, with no framework.

Per video (``clip.mp4`` -> ``OUT/wav/clip.wav``, ``OUT/wav2vec/clip.npy``, ``OUT/h5/clip.h5``):

- ``audio``: ffmpeg (the imageio-ffmpeg binary, an argv list, no shell) -> 16 kHz mono
  PCM16 wav;
- ``w2v``: transformers ``Wav2Vec2Model`` from a local folder, the whole clip at once,
  input normalised by its ``Wav2Vec2FeatureExtractor``, ``torch.inference_mode`` ->
  last hidden state (T, 768) float32 ``.npy``;
- ``decode``: PyAV, streaming (never every frame in memory), rgb24;
- ``face``: MediaPipe legacy ``FaceMesh`` in tracking mode (``static_image_mode=False``,
  ``refine_landmarks=True``, one face) on every frame -> 478 points per frame, pixels
  (x * W, y * H, z * W), NaN where no face;
- one square box per clip from the extent of every landmark (the original FixedBboxes
  rule: centre of the extent, side = mean(w, h) x 1.1 x 1.25);
- ``crop``: a second decode pass; the box cut out (zero padding outside the frame) and
  ``cv2.resize`` to 256x256 ``INTER_AREA``;
- ``encode``: simplejpeg q95 4:2:0 into an HDF5 variable-length dataset ``crops``, with
  ``landmarks`` (N, 478, 3), ``bbox`` (4,) and ``timestamps`` (N,).

Videos are split into ``--procs`` contiguous parts, one spawned worker process each (its
own model and face mesh); torch threads = cores // procs, ``cv2.setNumThreads(1)``. Stage
times are summed over videos and processes. The last stdout line is a JSON summary.

    .venv/bin/python benchmarks/bare_pipeline.py --videos DIR --out DIR --model DIR --procs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

STAGES = ("audio", "w2v", "decode", "face", "crop", "encode")
# Timed separately: decoding for the face pass and for the crop pass ("decode" is both).
TIMERS = ("audio", "w2v", "decode_mesh", "face", "decode_crop", "crop", "encode")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
MESH_POINTS = 478
BOX_MARGIN = 1.1
WRITE_BLOCK = 64  # JPEG crops written to HDF5 per slice assignment


@dataclass(frozen=True)
class Settings:
    """What every worker needs: where to write, the model folder and the thread budget."""

    out: Path
    model: Path
    threads: int
    size: int = 256
    quality: int = 95
    box_scale: float = 1.25


class Tools:
    """The libraries of one worker process: loaded once, used for every video."""

    def __init__(self, settings: Settings) -> None:
        import cv2
        import imageio_ffmpeg
        import mediapipe
        import torch
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        torch.set_num_threads(settings.threads)
        cv2.setNumThreads(1)
        self.settings = settings
        self.ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        self.torch = torch
        self.extractor = Wav2Vec2FeatureExtractor.from_pretrained(settings.model)
        self.model = Wav2Vec2Model.from_pretrained(settings.model).eval()
        self.face_mesh = mediapipe.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------


def extract_wav(tools: Tools, video: Path, wav: Path) -> None:
    """ffmpeg: the first audio stream -> 16 kHz mono PCM16 wav (written, then renamed)."""
    part = wav.with_name(wav.name + ".part")
    argv = [
        tools.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", f"file:{video}", "-map", "0:a:0", "-vn", "-ac", "1", "-ar", "16000",
        "-c:a", "pcm_s16le", "-f", "wav", f"file:{part}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()[-300:]
        raise RuntimeError(f"ffmpeg exited {done.returncode}: {message}")
    part.replace(wav)


def wav2vec_hidden(tools: Tools, wav: Path, npy: Path) -> int:
    """Last hidden state of the whole clip, saved as float32 (T, 768); returns T."""
    with wave.open(str(wav), "rb") as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), np.int16)
    audio = samples.astype(np.float32) / 32768.0
    inputs = tools.extractor(audio, sampling_rate=16000, return_tensors="pt")
    with tools.torch.inference_mode():
        hidden = tools.model(inputs.input_values).last_hidden_state[0].numpy()
    np.save(npy, hidden.astype(np.float32, copy=False))
    return int(hidden.shape[0])


# --------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------


def frames(video: Path, threads: int, timing: dict[str, float], timer: str):
    """Yield (rgb24 frame, seconds) streaming from PyAV; decode time goes to ``timer``."""
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        decoded = container.decode(stream)
        while True:
            start = time.perf_counter()
            frame = next(decoded, None)
            if frame is None:
                timing[timer] += time.perf_counter() - start
                return
            image = frame.to_ndarray(format="rgb24")
            seconds = float(frame.time) if frame.time is not None else float("nan")
            timing[timer] += time.perf_counter() - start
            yield image, seconds


def mesh_pass(tools: Tools, video: Path, timing: dict[str, float]) -> tuple[Any, ...]:
    """First pass: landmarks (N, 478, 3) px (NaN without a face), times (N,), frame size."""
    tools.face_mesh.reset()  # a new clip: forget the previous clip's track
    points: list[np.ndarray] = []
    times: list[float] = []
    width = height = 0
    missing = np.full((MESH_POINTS, 3), np.nan, np.float32)
    for image, seconds in frames(video, tools.settings.threads, timing, "decode_mesh"):
        start = time.perf_counter()
        height, width = image.shape[:2]
        result = tools.face_mesh.process(image)
        if result.multi_face_landmarks:
            marks = result.multi_face_landmarks[0].landmark
            xyz = np.array([(p.x, p.y, p.z) for p in marks], np.float32)
            points.append(xyz * np.array([width, height, width], np.float32))
        else:
            points.append(missing)
        times.append(seconds)
        timing["face"] += time.perf_counter() - start
    landmarks = np.stack(points) if points else np.zeros((0, MESH_POINTS, 3), np.float32)
    return landmarks, np.asarray(times, np.float64), (width, height)


def clip_box(landmarks: np.ndarray, scale: float) -> np.ndarray | None:
    """One square box int64 [x1, y1, x2, y2] around every landmark of the clip, or None."""
    xy = landmarks[..., :2].astype(np.float64)
    found = np.isfinite(xy).all(axis=(1, 2))
    if not found.any():
        return None
    x0, y0 = xy[found, :, 0].min(), xy[found, :, 1].min()
    x1, y1 = xy[found, :, 0].max(), xy[found, :, 1].max()
    side = max(np.floor(((x1 - x0) + (y1 - y0)) / 2 * BOX_MARGIN * scale + 0.5), 1.0)
    left = np.floor((x0 + x1) / 2 - side / 2 + 0.5)
    top = np.floor((y0 + y1) / 2 - side / 2 + 0.5)
    return np.array([left, top, left + side, top + side], np.int64)


def cut(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box's pixels (zero outside the frame) resized to size x size, INTER_AREA."""
    import cv2

    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        patch = image[y0:y1, x0:x1]
    else:
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def write_block(dataset: Any, block: list[np.ndarray], first: int) -> int:
    """Write JPEG byte arrays into the vlen dataset from index ``first``; return the next."""
    values = np.empty(len(block), dtype=object)
    values[:] = block
    dataset[first : first + len(block)] = values
    block.clear()
    return first + len(values)


def crop_pass(tools: Tools, video: Path, h5_path: Path, clip: dict[str, Any], timing) -> int:
    """Second pass: decode, crop, JPEG-encode into the HDF5 file; returns frames written."""
    import h5py
    import simplejpeg

    settings = tools.settings
    count, written, block = len(clip["times"]), 0, []
    part = h5_path.with_name(h5_path.name + ".part")
    start = time.perf_counter()
    with h5py.File(part, "w") as h5:
        crops = h5.create_dataset("crops", (count,), dtype=h5py.vlen_dtype(np.uint8))
        h5.create_dataset("landmarks", data=clip["landmarks"])
        h5.create_dataset("bbox", data=clip["box"])
        h5.create_dataset("timestamps", data=clip["times"])
        timing["encode"] += time.perf_counter() - start
        for index, (image, _) in enumerate(frames(video, settings.threads, timing, "decode_crop")):
            if index >= count:  # more frames than the first pass saw: ignored
                continue
            start = time.perf_counter()
            patch = cut(image, clip["box"], settings.size)
            middle = time.perf_counter()
            jpeg = simplejpeg.encode_jpeg(
                patch, quality=settings.quality, colorspace="RGB", colorsubsampling="420"
            )
            block.append(np.frombuffer(jpeg, np.uint8))
            if len(block) == WRITE_BLOCK:
                written = write_block(crops, block, written)
            timing["crop"] += middle - start
            timing["encode"] += time.perf_counter() - middle
        start = time.perf_counter()
        if block:
            written = write_block(crops, block, written)
    part.replace(h5_path)
    timing["encode"] += time.perf_counter() - start
    return written


# --------------------------------------------------------------------------------------
# Per video, per worker, whole run
# --------------------------------------------------------------------------------------


def audio_stages(tools: Tools, video: Path, timing: dict[str, float]) -> int:
    """wav, then its wav2vec2 features; returns the feature steps."""
    out, stem = tools.settings.out, video.stem
    wav = out / "wav" / f"{stem}.wav"
    start = time.perf_counter()
    extract_wav(tools, video, wav)
    timing["audio"] += time.perf_counter() - start
    start = time.perf_counter()
    steps = wav2vec_hidden(tools, wav, out / "wav2vec" / f"{stem}.npy")
    timing["w2v"] += time.perf_counter() - start
    return steps


def process_video(tools: Tools, video: Path) -> dict[str, Any]:
    """Every stage on one video; an error is recorded, never raised."""
    timing = dict.fromkeys(TIMERS, 0.0)
    record: dict[str, Any] = {"video": video.stem, "frames": 0, "faces": 0, "error": None}
    try:
        record["w2v_steps"] = audio_stages(tools, video, timing)
        landmarks, times, _ = mesh_pass(tools, video, timing)
        record["frames"] = len(times)
        record["faces"] = int(np.isfinite(landmarks[:, 0, 0]).sum())
        box = clip_box(landmarks, tools.settings.box_scale)
        if box is None:
            raise RuntimeError("no face in any frame")
        record["bbox"] = box.tolist()
        clip = {"landmarks": landmarks, "times": times, "box": box}
        h5_path = tools.settings.out / "h5" / f"{video.stem}.h5"
        record["crops"] = crop_pass(tools, video, h5_path, clip, timing)
    except Exception as error:  # one bad video never stops the others
        record["error"] = f"{type(error).__name__}: {error}"
    record["stage_s"] = {timer: round(seconds, 4) for timer, seconds in timing.items()}
    return record


def worker(videos: list[Path], settings: Settings) -> dict[str, Any]:
    """One worker process: load the libraries once, then process its videos in order."""
    started = time.perf_counter()
    tools = Tools(settings)
    loaded = time.perf_counter()
    records = [process_video(tools, video) for video in videos]
    tools.face_mesh.close()
    return {
        "pid": os.getpid(),
        "load_s": loaded - started,
        "work_s": time.perf_counter() - loaded,
        "videos": records,
    }


def split(videos: list[Path], parts: int) -> list[list[Path]]:
    """Contiguous parts of nearly equal length (the first ones one longer)."""
    size, extra = divmod(len(videos), parts)
    chunks, first = [], 0
    for index in range(parts):
        last = first + size + (1 if index < extra else 0)
        chunks.append(videos[first:last])
        first = last
    return [chunk for chunk in chunks if chunk]


def run_workers(videos: list[Path], settings: Settings, procs: int) -> list[dict[str, Any]]:
    """Each part in its own spawned process (one process: in this one)."""
    parts = split(videos, procs)
    if len(parts) <= 1:
        return [worker(parts[0] if parts else [], settings)]
    context = get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
        futures = [pool.submit(worker, part, settings) for part in parts]
        return [future.result() for future in futures]


def summarise(workers: list[dict[str, Any]], procs: int, threads: int, wall: float) -> dict:
    """The JSON summary: stage seconds summed over videos and processes, per-video records."""
    records = [record for item in workers for record in item["videos"]]
    stage_s = {timer: sum(r["stage_s"][timer] for r in records) for timer in TIMERS}
    stage_s["decode"] = stage_s["decode_mesh"] + stage_s["decode_crop"]
    return {
        "tool": "bare_pipeline",
        "procs": procs,
        "torch_threads": threads,
        "videos": len(records),
        "frames": sum(r["frames"] for r in records),
        "errors": {r["video"]: r["error"] for r in records if r["error"]},
        "stage_s": {key: round(stage_s[key], 3) for key in (*STAGES, "decode_mesh", "decode_crop")},
        "load_s": [round(item["load_s"], 3) for item in workers],
        "work_s": [round(item["work_s"], 3) for item in workers],
        "wall_s": round(wall, 3),
        "per_video": records,
    }


def main() -> int:
    """Parse the arguments, process every video, print the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, required=True, help="folder of videos")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--model", type=Path, required=True, help="wav2vec2 model folder")
    parser.add_argument("--procs", type=int, default=2, help="worker processes (%(default)s)")
    args = parser.parse_args()
    started = time.perf_counter()
    videos = sorted(path for path in args.videos.iterdir() if path.suffix.lower() in VIDEO_SUFFIXES)
    procs = max(1, min(args.procs, len(videos)))
    threads = max(1, (os.cpu_count() or 1) // procs)
    for name in ("wav", "wav2vec", "h5"):
        (args.out / name).mkdir(parents=True, exist_ok=True)
    settings = Settings(out=args.out, model=args.model, threads=threads)
    workers = run_workers(videos, settings, procs)
    summary = summarise(workers, procs, threads, time.perf_counter() - started)
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
