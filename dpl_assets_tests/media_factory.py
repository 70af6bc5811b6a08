"""Tiny test media built on demand, and independent references to check code against.

Files are made with the ffmpeg binary the pipeline itself runs (imageio-ffmpeg's, see
:func:`dpl_assets.media.ffmpeg.ffmpeg_executable`); the references (:func:`ffprobe_json`,
:func:`ffprobe_decoded_audio_samples`, :func:`reference_channel`) use the *system* ffmpeg and
ffprobe instead, so a bug in how the pipeline drives its binary cannot hide in both.

Every command is an argument list (no shell), and every path reaches ffmpeg as a ``file:``
URL of its absolute path, so odd names (spaces, quotes, ``$(...)``, unicode, a leading
``-``) are plain file names. Each ``make_*`` function creates the parent folder, writes one
file and returns its path.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from dpl_assets.media.ffmpeg import ffmpeg_executable

REFERENCE_RATE_HZ = 16_000
SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs."
)


# --------------------------------------------------------------------------------------
# Running the binaries
# --------------------------------------------------------------------------------------


def _url(path: Path | str) -> str:
    return "file:" + str(Path(path).absolute())


def _run(command: list[str]) -> bytes:
    completed = subprocess.run(command, capture_output=True, check=False)
    if completed.returncode != 0:
        detail = completed.stderr.decode("utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{command[0]} failed (exit {completed.returncode}): {detail}")
    return completed.stdout


def _ffmpeg(*args: str) -> bytes:
    """Run the pipeline's ffmpeg binary (the one that makes the fixtures)."""
    return _run(
        [ffmpeg_executable(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    )


@functools.cache
def _has_encoder(name: str) -> bool:
    listing = _run([ffmpeg_executable(), "-hide_banner", "-encoders"]).decode(errors="replace")
    return any(line.split()[1:2] == [name] for line in listing.splitlines() if line.strip())


def _video_codec_args() -> list[str]:
    if _has_encoder("libx264"):
        return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    return ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"]


def _system_binary(name: str) -> str:
    """The Debian build in /usr/bin, else whatever is on PATH (never imageio's binary)."""
    preferred = Path("/usr/bin") / name
    if preferred.is_file():
        return str(preferred)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"the system {name} is needed as an independent reference")
    return found


def _target(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _testsrc(seconds: float, size: tuple[int, int] = (160, 120), fps: int = 25) -> list[str]:
    width, height = size
    return ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"]


def _sine(seconds: float, sample_rate: int, frequency: int = 440) -> list[str]:
    return [
        "-f", "lavfi",
        "-i", f"sine=frequency={frequency}:sample_rate={sample_rate}:duration={seconds}",
    ]  # fmt: skip


def _speech_wav(folder: Path) -> Path | None:
    """Real synthesized speech from espeak-ng, or None when espeak-ng is not installed."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    wav = folder / "speech.wav"
    _run([espeak, "-w", str(wav), SPEECH_TEXT])
    return wav


def _voice_input(folder: Path, seconds: float, sample_rate: int, kind: str) -> list[str]:
    """ffmpeg input arguments for ``seconds`` of a voice ("speech") or a tone ("sine")."""
    if kind not in ("sine", "speech"):
        raise ValueError(f"audio must be 'sine' or 'speech', not {kind!r}")
    speech = _speech_wav(folder) if kind == "speech" else None
    if speech is None:
        return _sine(seconds, sample_rate)
    # Loop the utterance so any requested length is covered, then cut with -t.
    return ["-stream_loop", "-1", "-t", str(seconds), "-i", _url(speech)]


# --------------------------------------------------------------------------------------
# Good media
# --------------------------------------------------------------------------------------


def make_talking_clip(
    path: Path | str,
    seconds: float = 2.0,
    audio: str = "sine",
    size: tuple[int, int] = (160, 120),
    fps: int = 25,
    sample_rate: int = 44_100,
    channels: int = 2,
) -> Path:
    """An .mp4: testsrc2 video (h264, or mpeg4) plus AAC audio (a sine tone or speech)."""
    path = _target(path)
    with tempfile.TemporaryDirectory() as scratch:
        _ffmpeg(
            *_testsrc(seconds, size, fps),
            *_voice_input(Path(scratch), seconds, sample_rate, audio),
            "-map", "0:v:0", "-map", "1:a:0",
            *_video_codec_args(),
            "-c:a", "aac", "-b:a", "96k", "-ar", str(sample_rate), "-ac", str(channels),
            "-t", str(seconds), "-shortest",
            "-f", "mp4", _url(path),
        )  # fmt: skip
    return path


def make_right_channel_voice(path: Path | str, seconds: float = 2.0) -> Path:
    """A video (.mkv) whose stereo PCM audio is digital silence left and a voice right.

    PCM keeps the left channel exactly zero (a lossy codec would leak into it).
    """
    path = _target(path)
    rate = 48_000
    with tempfile.TemporaryDirectory() as scratch:
        _ffmpeg(
            *_testsrc(seconds),
            "-f", "lavfi", "-i", f"anullsrc=channel_layout=mono:sample_rate={rate}",
            *_voice_input(Path(scratch), seconds, rate, "speech"),
            "-filter_complex",
            f"[2:a]aresample={rate},aformat=channel_layouts=mono[voice];"
            "[1:a][voice]amerge=inputs=2,aformat=channel_layouts=stereo[stereo]",
            "-map", "0:v:0", "-map", "[stereo]",
            *_video_codec_args(),
            "-c:a", "pcm_s16le", "-ar", str(rate),
            "-t", str(seconds),
            "-f", "matroska", _url(path),
        )  # fmt: skip
    return path


def make_video_only(path: Path | str, seconds: float = 1.0) -> Path:
    """An .mp4 with a video stream and no audio stream."""
    path = _target(path)
    _ffmpeg(*_testsrc(seconds), *_video_codec_args(), "-an", "-t", str(seconds), "-f", "mp4",
            _url(path))  # fmt: skip
    return path


def make_rotated(path: Path | str) -> Path:
    """An .mp4 of a 160x96 testsrc video whose header asks for a 90 degree display rotation."""
    path = _target(path)
    plain = path.with_name("plain-" + path.name)
    _ffmpeg(*_testsrc(0.4, size=(160, 96)), *_video_codec_args(), _url(plain))
    _ffmpeg("-display_rotation", "90", "-i", _url(plain), "-c", "copy", _url(path))
    return path


def make_audio_only(path: Path | str, seconds: float = 1.0) -> Path:
    """An mp4 container holding one AAC audio stream and nothing else."""
    path = _target(path)
    _ffmpeg(*_sine(seconds, 44_100), "-c:a", "aac", "-b:a", "96k", "-t", str(seconds),
            "-f", "mp4", _url(path))  # fmt: skip
    return path


def make_aac(path: Path | str, seconds: float = 1.5) -> Path:
    """An .m4a AAC audio file (44.1 kHz stereo sine)."""
    path = _target(path)
    _ffmpeg(*_sine(seconds, 44_100, frequency=330), "-c:a", "aac", "-b:a", "96k", "-ac", "2",
            "-t", str(seconds), "-f", "ipod", _url(path))  # fmt: skip
    return path


# --------------------------------------------------------------------------------------
# Bad media
# --------------------------------------------------------------------------------------


def make_zero_byte(path: Path | str) -> Path:
    """An empty file."""
    path = _target(path)
    path.write_bytes(b"")
    return path


def _keep_fraction(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def make_header_lost(path: Path | str) -> Path:
    """An mp4 cut before its moov atom (written last, no faststart): it cannot be opened."""
    path = _target(path)
    make_talking_clip(path, seconds=2.0)
    data = path.read_bytes()
    moov = data.find(b"moov")
    assert moov > len(data) * 0.4, f"fixture broken: moov at byte {moov} of {len(data)}"
    _keep_fraction(path, 0.4)
    assert b"moov" not in path.read_bytes()
    try:
        av.open(str(path)).close()
    except av.FFmpegError:
        return path
    raise AssertionError(f"fixture broken: PyAV still opens the header-less {path}")


def decoded_vs_header_audio_s(path: Path | str) -> tuple[float, float]:
    """(seconds of audio PyAV decodes, seconds the audio stream's header states)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None:
            header_s = float(stream.duration * stream.time_base)
        else:  # e.g. Matroska states only the container's duration
            header_s = container.duration / av.time_base
        decoded = 0
        try:
            for frame in container.decode(stream):
                decoded += frame.samples
        except av.FFmpegError:
            pass  # the damaged tail; what decoded before it counts
        return decoded / stream.codec_context.sample_rate, header_s


def make_truncated_promising_more(path: Path | str, seconds: float = 4.0) -> Path:
    """An mp4 whose header (moov in front) promises ``seconds`` of audio, cut to ~40 %.

    The file still opens, but clearly less audio decodes than the header states. The
    file is audio-heavy (high-bitrate AAC, a tiny low-bitrate video) so that the cut
    removes audio and not just video; the property is asserted here.
    """
    path = _target(path)
    _ffmpeg(
        *_testsrc(seconds, size=(64, 48), fps=5),
        *_sine(seconds, 48_000),
        "-map", "0:v:0", "-map", "1:a:0",
        *_video_codec_args(), "-b:v", "16k",
        "-c:a", "aac", "-b:a", "256k", "-ac", "2",
        "-t", str(seconds),
        "-movflags", "+faststart",
        "-f", "mp4", _url(path),
    )  # fmt: skip
    _keep_fraction(path, 0.4)
    decoded_s, header_s = decoded_vs_header_audio_s(path)
    assert header_s >= seconds - 0.1, f"fixture broken: header states {header_s} s"
    assert decoded_s < header_s - 1.0, (
        f"fixture broken: {decoded_s:.2f} s of {header_s:.2f} s still decode after the cut"
    )
    return path


# --------------------------------------------------------------------------------------
# A folder of samples
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleMedia:
    """Paths of one of each kind of test media, all in ``folder``."""

    folder: Path
    sine_clip: Path  # 2 s, 44.1 kHz stereo AAC + h264
    speech_clip: Path  # 2.5 s, 48 kHz mono AAC speech + h264
    low_rate_clip: Path  # 1.2 s, 22.05 kHz mono AAC
    right_channel_voice: Path  # .mkv, stereo PCM: silent left, voice right
    video_only: Path
    audio_only: Path
    aac: Path
    zero_byte: Path
    header_lost: Path
    truncated: Path


def build_sample_media(folder: Path | str) -> SampleMedia:
    """Write one file of each kind into ``folder``."""
    folder = Path(folder)
    return SampleMedia(
        folder=folder,
        sine_clip=make_talking_clip(folder / "sine.mp4", seconds=2.0),
        speech_clip=make_talking_clip(
            folder / "speech.mp4", seconds=2.5, audio="speech", sample_rate=48_000, channels=1
        ),
        low_rate_clip=make_talking_clip(
            folder / "low rate.mp4", seconds=1.2, sample_rate=22_050, channels=1, fps=15
        ),
        right_channel_voice=make_right_channel_voice(folder / "right voice.mkv"),
        video_only=make_video_only(folder / "video only.mp4"),
        audio_only=make_audio_only(folder / "audio only.mp4"),
        aac=make_aac(folder / "track.m4a"),
        zero_byte=make_zero_byte(folder / "zero.mp4"),
        header_lost=make_header_lost(folder / "header lost.mp4"),
        truncated=make_truncated_promising_more(folder / "truncated.mp4"),
    )


# --------------------------------------------------------------------------------------
# Independent references (system ffprobe / ffmpeg)
# --------------------------------------------------------------------------------------


def ffprobe_json(path: Path | str) -> dict:
    """The system ffprobe's description of ``path`` (streams and format)."""
    out = _run(
        [
            _system_binary("ffprobe"), "-v", "error", "-print_format", "json",
            "-show_streams", "-show_format", _url(path),
        ]
    )  # fmt: skip
    return json.loads(out)


def ffprobe_audio_duration_s(path: Path | str) -> float:
    """Duration of the first audio stream as the system ffprobe reports it."""
    info = ffprobe_json(path)
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    return float(audio.get("duration") or info["format"]["duration"])


def reference_audio(
    path: Path | str, rate: int | None = REFERENCE_RATE_HZ, channel: int | None = None
) -> np.ndarray:
    """The first audio stream decoded by the system ffmpeg: float32 (N,) in [-1, 1].

    ``channel`` None averages all channels (for mono and stereo that is the pipeline's
    documented downmix; ffmpeg's own ``-ac 1`` adds stereo at 0.707 each), otherwise that
    one channel is taken; ``rate`` None keeps the source's sample rate.
    """
    mix = [] if channel is None else ["-af", f"pan=mono|c0=c{channel}"]
    resample = [] if rate is None else ["-ar", str(rate)]
    pcm = _run(
        [
            _system_binary("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error",
            "-i", _url(path), "-map", "0:a:0", *mix, *resample,
            "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
        ]
    )  # fmt: skip
    samples = np.frombuffer(pcm, dtype="<f4")
    if channel is not None:
        return samples.astype(np.float32)
    audio = next(s for s in ffprobe_json(path)["streams"] if s["codec_type"] == "audio")
    return samples.reshape(-1, int(audio["channels"])).mean(axis=1).astype(np.float32)


def ffprobe_decoded_audio_samples(path: Path | str) -> int:
    """Samples of the first audio stream as mono 16 kHz, by the system ffmpeg and ffprobe.

    The count of what the system ffmpeg decodes (s16le bytes / 2), capped at the stream
    duration the system ffprobe reports. The cap matters for AAC in MP4: Debian's ffmpeg
    5.1 keeps the encoder's end padding (up to 1023 source samples, ~20 ms) that the edit
    list trims and newer ffmpeg builds drop; a truncated file decodes to less than its
    header, so there the decoded count stands. See :func:`reference_audio` for the raw
    decode.
    """
    decoded = reference_audio(path).size
    stated = round(ffprobe_audio_duration_s(path) * REFERENCE_RATE_HZ)
    return min(decoded, stated)


def reference_channel(path: Path | str, channel: int) -> np.ndarray:
    """One channel of the first audio stream at its own rate, decoded by the system ffmpeg."""
    return reference_audio(path, rate=None, channel=channel)
