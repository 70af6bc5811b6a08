"""Benchmark: frames per second of each vision stage on this CPU, beside bare library speeds.

On one long 1080p clip (a real face photo drifting on a 1920x1080 canvas), measures in one
run:
- decode: ``decode_frames`` (PyAV, timestamps, rotation)  vs  bare PyAV ``to_ndarray``;
- detect: ``FaceAnalyzer.detect``  vs  bare mediapipe FaceDetection on the full frame;
- landmarks: ``FaceAnalyzer.analyze`` (detect + crop + mesh + tracking)  vs  bare mediapipe
  FaceMesh on the full frame;
- crop: ``crop_frames`` 256x256  vs  bare ``cv2.resize`` of the same slice;
- encode: ``ImageStackWriter`` JPEG q95 into HDF5  vs  bare ``cv2.imencode``;
and the peak resident memory of the whole ``images`` stage (decode + encode of every
frame) in a fresh process, against the size of the decoded video.

    .venv/bin/python benchmarks/vision_stages.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bench_media import h264_writer

from dpl_assets.media.frames import decode_frames
from dpl_assets.nodes.crops import crop_frames
from dpl_assets.nodes.faces import FaceAnalyzer
from dpl_assets.samples import face_frames
from dpl_assets.storage.image_stack import ImageStackWriter

WIDTH, HEIGHT, FPS = 1920, 1080, 25


def make_long_clip(path: Path, seconds: float) -> Path:
    """A 1080p H.264 clip, frames streamed to ffmpeg one by one (never all in memory)."""
    faces = face_frames(seconds, FPS, size=560)
    writer = h264_writer(path, (WIDTH, HEIGHT), FPS)
    assert writer.stdin is not None
    canvas = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    for index, face in enumerate(faces):
        x = 600 + round(200 * np.sin(index / 40))
        canvas[:] = 90
        canvas[260:820, x : x + 560] = face
        writer.stdin.write(canvas.tobytes())
    writer.stdin.close()
    writer.wait()
    return path


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def timed(fn) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def peak_rss_mb() -> float:
    """This process's resident high-water mark (VmHWM). Unlike ``ru_maxrss``, which Linux
    carries over from the parent across exec, it starts afresh in a spawned child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def images_stage_peak_rss(clip: str, out: str, queue) -> None:
    from dpl_assets.nodes.frames import extract_frames

    before = peak_rss_mb()  # after importing everything the pipeline imports
    info = extract_frames(Path(clip), Path(out))
    after = peak_rss_mb()
    queue.put(
        {
            "frames": info.frames,
            "peak_rss_mb": after,
            "peak_before_first_frame_mb": before,
            "growth_mb": round(after - before, 1),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sample", type=int, default=100, help="frames timed per model stage")
    parser.add_argument("--report", type=Path, default=Path("benchmarks/results/vision.json"))
    args = parser.parse_args()
    import mediapipe as mp

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        clip = make_long_clip(scratch / "long 1080p.mp4", args.seconds)
        report: dict[str, object] = {
            "clip": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "seconds": args.seconds}
        }
        stages: dict[str, dict[str, float]] = {}

        import av

        def bare_decode() -> int:
            with av.open(str(clip)) as container:
                return sum(
                    1 for f in container.decode(video=0) if f.to_ndarray(format="rgb24") is not None
                )

        frames: list[np.ndarray] = []

        def our_decode() -> int:
            count = 0
            for frame in decode_frames(clip):  # keep only the sample, as a stream would
                if len(frames) < args.sample:
                    frames.append(frame.rgb)
                count += 1
            return count

        t_bare, total = timed(bare_decode)
        t_ours, _ = timed(our_decode)
        stages["decode"] = {"ours_fps": rate(total, t_ours), "bare_fps": rate(total, t_bare)}

        with FaceAnalyzer() as analyzer:
            t_ours, _ = timed(lambda: [analyzer.detect(f) for f in frames])
        with mp.solutions.face_detection.FaceDetection(model_selection=1) as detector:
            t_bare, _ = timed(lambda: [detector.process(f) for f in frames])
        stages["detect"] = {
            "ours_fps": rate(len(frames), t_ours),
            "bare_fps": rate(len(frames), t_bare),
        }

        with FaceAnalyzer() as analyzer:
            t_ours, result = timed(lambda: analyzer.analyze(iter(frames)))
        with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True) as m:
            t_bare, _ = timed(lambda: [m.process(f) for f in frames])
        stages["landmarks"] = {
            "ours_fps": rate(len(frames), t_ours),
            "bare_fps": rate(len(frames), t_bare),
        }

        box = np.array([[700, 300, 1300, 900]] * len(frames))
        t_ours, _ = timed(lambda: list(crop_frames(frames, box, 256)))
        t_bare, _ = timed(
            lambda: [
                cv2.resize(f[300:900, 700:1300], (256, 256), interpolation=cv2.INTER_AREA)
                for f in frames
            ]
        )
        stages["crop"] = {
            "ours_fps": rate(len(frames), t_ours),
            "bare_fps": rate(len(frames), t_bare),
        }

        def encode_ours() -> None:
            with ImageStackWriter(scratch / "enc.h5", "images") as stack:
                for index, frame in enumerate(frames):
                    stack.append(frame, index / FPS)

        t_ours, _ = timed(encode_ours)
        t_bare, _ = timed(
            lambda: [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95]) for f in frames]
        )
        stages["encode_jpeg"] = {
            "ours_fps": rate(len(frames), t_ours),
            "bare_fps": rate(len(frames), t_bare),
        }
        report["stages"] = stages
        report["faces_found_in_sample"] = result.info["frames_with_face"]

        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        child = context.Process(
            target=images_stage_peak_rss, args=(str(clip), str(scratch / "images.h5"), queue)
        )
        child.start()
        memory = queue.get()
        child.join()
        memory["decoded_video_mb"] = round(total * WIDTH * HEIGHT * 3 / 2**20, 1)
        report["images_stage_memory"] = memory

    print(json.dumps(report, indent=1))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
