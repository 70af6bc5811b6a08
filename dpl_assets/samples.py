"""Sample media the project makes offline: short clips to try the pipeline on.

Good clips: ffmpeg's ``testsrc2`` pattern with speech from ``espeak-ng`` when it is
installed (a tone sweep otherwise), in several containers. Bad inputs show rejections:
a zero-byte file and a clip without an audio stream.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

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


def make_clip(path: Path, text: str, seconds: float = 4.0, size: str = "320x240") -> Path:
    """A talking-clip stand-in: test pattern video at 25 fps + speech (or tones) at 44.1 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        speech = _speech_wav(text, Path(scratch))
        audio_in = (
            ["-i", file_url(speech)]
            if speech
            else ["-f", "lavfi", "-i", f"sine=frequency=220:beep_factor=4:duration={seconds}"]
        )
        run_ffmpeg(
            [
                "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}",
                *audio_in,
                "-filter_complex", f"[1:a]apad,atrim=0:{seconds},aresample=44100[a]",
                "-map", "0:v", "-map", "[a]", "-ac", "2",
                "-c:v", "mpeg4", "-q:v", "5", "-c:a", "aac", "-b:a", "96k",
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
