"""Sample media the project makes offline: short clips to try the pipeline on.

Good clips: a real face photo drifting slowly, with speech from ``espeak-ng`` when it is
installed (tones otherwise), in several containers. Lips do not move: face detection,
landmarks, pose and crops are real, lip sync is not. Bad inputs show rejections: a
zero-byte file and a clip without an audio stream (a test pattern: no face either).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from dpl_assets.media.ffmpeg import file_url, run_ffmpeg

SPEECH = [
    "The quick brown fox jumps over the lazy dog.",
    "Training data for talking heads starts with clean audio.",
    "Every video gets a record, and every rejection gets a reason.",
]


def _speech_wav(text: str, folder: Path) -> Path | None:
    """Real synthetic speech from espeak-ng, or None when it is not installed."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    out = folder / "speech.wav"
    subprocess.run([espeak, "-w", str(out), text], check=True, capture_output=True)
    return out


def face_frames(seconds: float, fps: int = 25, size: int = 320) -> np.ndarray:
    """Frames (N, size, size, 3) uint8 of a real face photo drifting slowly.

    The photo (Grace Hopper, US Navy, public domain) ships with matplotlib, which mediapipe
    installs, so it is always available offline.
    """
    from matplotlib import cbook

    photo = cv2.cvtColor(
        cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))),
        cv2.COLOR_BGR2RGB,
    )
    count = round(seconds * fps)
    frames = np.empty((count, size, size, 3), np.uint8)
    for index in range(count):
        dx, dy = (round(12 * np.sin(index / 17)), round(8 * np.sin(index / 23)))
        window = photo[40 + dy : 460 + dy, 46 + dx : 466 + dx]
        frames[index] = cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)
    return frames


def make_clip(path: Path, text: str, seconds: float = 4.0) -> Path:
    """A talking-clip stand-in: a real face at 25 fps + speech (or tones) at 44.1 kHz stereo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = face_frames(seconds)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "frames.rgb"
        raw.write_bytes(frames.tobytes())
        speech = _speech_wav(text, Path(scratch))
        audio_in = (
            ["-i", file_url(speech)]
            if speech
            else ["-f", "lavfi", "-i", f"sine=frequency=220:beep_factor=4:duration={seconds}"]
        )
        run_ffmpeg(
            [
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{frames.shape[2]}x{frames.shape[1]}",
                "-r", "25", "-i", file_url(raw),
                *audio_in,
                "-filter_complex", f"[1:a]apad,atrim=0:{seconds},aresample=44100[a]",
                "-map", "0:v", "-map", "[a]", "-ac", "2",
                "-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
                "-t", str(seconds), "-y", file_url(path),
            ],
            what=str(path),
        )  # fmt: skip
    return path


def make_video_only(path: Path, seconds: float = 2.0) -> Path:
    """A clip with no audio stream (rejected by the audio branch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
         "-c:v", "mpeg4", "-y", file_url(path)],
        what=str(path),
    )  # fmt: skip
    return path


def make_samples(folder: Path) -> Path:
    """Write sample videos under ``folder/videos`` and ``folder/inputs.json``; return the latter."""
    videos = folder / "videos"
    make_clip(videos / "speaker one" / "take 1.mp4", SPEECH[0])
    make_clip(videos / "speaker one" / "take 2.mkv", SPEECH[1])
    make_clip(videos / "speaker_two.mov", SPEECH[2])
    make_video_only(videos / "silent film.mp4")
    (videos / "empty upload.mp4").write_bytes(b"")
    inputs = folder / "inputs.json"
    inputs.write_text(json.dumps({"video": "videos"}, indent=1), encoding="utf-8")
    return inputs
