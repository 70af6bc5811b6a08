"""Test inputs for the container clock: late audio, timestamp gaps, short audio, several
streams, damaged data, channel layouts (the kinds real-world lip-sync data shows).

Made with the pipeline's ffmpeg binary and PyAV remuxing (packets copied, never
re-encoded, so timestamps are exactly what the test says). Every function writes one file
and returns its path.
"""

from __future__ import annotations

import random
from pathlib import Path

import av

from dpl_assets_tests.media_factory import _ffmpeg, _speech_wav, _target, _url

FPS = 25
FLASH_FRAMES = (25, 26)  # white frames at 1.00 s and 1.04 s
BEEP_S = 1.0  # where the 1 kHz beep sits on the container clock in every synced clip
SECONDS = 4.0
CHIRP = "0.3*sin(2*PI*(200*t+200*t*t))"  # 200 Hz rising 400 Hz per second


def _x264() -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25"]


def make_flash_beep(path: Path | str, audio_lead_s: float = 0.0, audio_s: float = SECONDS) -> Path:
    """A 4 s 25 fps clip, black but for white frames 25-26 (1.00 s), with ``audio_s`` of
    audio holding a 0.1 s 1 kHz beep at ``1.0 - audio_lead_s`` s from the audio's start."""
    path = _target(path)
    flash = f"between(n,{FLASH_FRAMES[0]},{FLASH_FRAMES[1]})"
    delay_ms = round((BEEP_S - audio_lead_s) * 1000)
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=black:s=160x120:r={FPS}:d={SECONDS}",
        "-f", "lavfi", "-i", "sine=f=1000:r=48000:d=0.1",
        "-filter_complex",
        f"[0]drawbox=enable='{flash}':c=white:t=fill[v];"
        f"[1]adelay={delay_ms}:all=1,apad=whole_dur={audio_s}[a]",
        "-map", "[v]", "-map", "[a]", *_x264(), "-c:a", "aac", "-ar", "48000", _url(path),
    )  # fmt: skip
    return path


def make_late_audio(path: Path | str, offset_s: float = 0.5) -> Path:
    """The flash-beep clip with its audio stream starting ``offset_s`` late (``-itsoffset``
    remux, as cameras and editors write it); it plays in sync: beep at 1.00 s."""
    path = _target(path)
    source = make_flash_beep(path.with_name(path.stem + ".src.mp4"), audio_lead_s=offset_s,
                             audio_s=SECONDS - offset_s)  # fmt: skip
    _ffmpeg(
        "-i", _url(source), "-itsoffset", str(offset_s), "-i", _url(source),
        "-map", "0:v", "-map", "1:a", "-c", "copy", _url(path),
    )  # fmt: skip
    source.unlink()
    return path


def make_noise_clip(path: Path | str, seconds: float = SECONDS, audio_s: float | None = None,
                    video_codec: str = "libx264", audio_codec: str = "aac") -> Path:  # fmt: skip
    """Moving test pattern with a chirp as audio (200 Hz rising 400 Hz per second: every
    shift of it is visible, and codecs code it exactly, unlike noise, which AAC replaces by
    its own); ``audio_s`` shorter than ``seconds`` makes the audio end early."""
    path = _target(path)
    video = _x264() if video_codec == "libx264" else ["-c:v", video_codec, "-b:v", "300k"]
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=160x120:r={FPS}:d={seconds}",
        "-f", "lavfi", "-i", f"aevalsrc={CHIRP}:s=48000:d={audio_s or seconds}",
        "-map", "0:v", "-map", "1:a", *video, "-c:a", audio_codec, "-ar", "48000", _url(path),
    )  # fmt: skip
    return path


def drop_audio_packets(source: Path, path: Path | str, start_s: float, end_s: float) -> Path:
    """Copy ``source`` leaving out the audio packets whose pts lies in [start_s, end_s), every
    other timestamp kept (what a lossy capture or a broken muxer leaves)."""
    path = _target(path)
    with av.open(str(source)) as inp, av.open(str(path), "w") as out:
        mapping = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio" and packet.pts is not None:
                time_s = float(packet.pts * packet.time_base)
                if start_s <= time_s < end_s:
                    continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return path


def make_two_audio_streams(path: Path | str, default: int | None) -> Path:
    """A clip with a 440 Hz tone as audio stream 1 and speech as audio stream 2; the
    ``default`` flag on audio stream ``default`` (0 or 1 among the audio streams) or none."""
    path = _target(path)
    speech = _speech_wav(path.parent)
    assert speech is not None, "espeak-ng is needed"
    flags: list[str] = []
    for position in (0, 1):
        flags += [f"-disposition:a:{position}", "default" if position == default else "0"]
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=160x120:r={FPS}:d=2",
        "-f", "lavfi", "-i", "sine=f=440:r=48000:d=2",
        "-t", "2", "-i", _url(speech),
        "-map", "0:v", "-map", "1:a", "-map", "2:a", *_x264(), "-c:a", "aac", *flags,
        _url(path),
    )  # fmt: skip
    return path


def make_picture_then_video(path: Path | str) -> Path:
    """Matroska with a one-frame MJPEG picture as track 0 and the moving H.264 video as
    track 1 (Matroska has no attached-picture flag)."""
    path = _target(path)
    picture = path.with_name(path.stem + ".picture.jpg")
    _ffmpeg("-f", "lavfi", "-i", "color=red:s=320x240", "-frames:v", "1", _url(picture))
    video = make_noise_clip(path.with_name(path.stem + ".video.mp4"), seconds=2.0)
    _ffmpeg(
        "-i", _url(picture), "-i", _url(video), "-map", "0:v", "-map", "1:v", "-map", "1:a",
        "-c:v:0", "mjpeg", "-c:v:1", "copy", "-c:a", "copy", _url(path),
    )  # fmt: skip
    picture.unlink()
    video.unlink()
    return path


def damage_mid_stream(source: Path, path: Path | str, fraction: float = 0.45,
                      size: int = 20_000, zeros: bool = False) -> Path:  # fmt: skip
    """Copy ``source`` with ``size`` bytes (random, or zeros) overwritten at ``fraction``."""
    path = _target(path)
    data = bytearray(source.read_bytes())
    at = int(len(data) * fraction)
    size = min(size, len(data) // 8)
    data[at : at + size] = bytes(size) if zeros else random.Random(1).randbytes(size)
    path.write_bytes(bytes(data))
    return path


def make_short_audio(path: Path | str, audio_ms: int = 10) -> Path:
    """A 1 s clip whose audio (PCM, so no codec padding) lasts ``audio_ms``."""
    path = _target(path)
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=s=160x120:r={FPS}:d=1",
        "-f", "lavfi", "-i", f"sine=f=440:r=48000:d={audio_ms / 1000}",
        "-map", "0:v", "-map", "1:a", *_x264(), "-c:a", "pcm_s16le", _url(path),
    )  # fmt: skip
    return path


def make_speech_in_layout(path: Path | str, layout: str) -> Path:
    """The same espeak-ng speech as ``mono``, ``stereo`` (both channels) or ``5.1`` (only in
    the centre channel), AAC in MP4."""
    path = _target(path)
    speech = _speech_wav(path.parent)
    assert speech is not None, "espeak-ng is needed"
    mix = {
        "mono": "pan=mono|c0=c0",
        "stereo": "pan=stereo|c0=c0|c1=c0",
        "5.1": "pan=5.1|FC=c0",
    }[layout]
    _ffmpeg("-i", _url(speech), "-af", mix, "-c:a", "aac", "-b:a", "192k", _url(path))
    return path
