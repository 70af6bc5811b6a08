"""The probe memo: a file probed once per process is not opened again while it is unchanged,
and a file replaced or rewritten since is probed again (references: the system ffprobe and
the container opens counted at :func:`~dpl_assets.media.probe.open_container`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dpl_assets.media import probe as probe_module
from dpl_assets.media.probe import probe_media
from dpl_assets.outcomes import InputRejected
from dpl_assets_tests import media_factory as media


@pytest.fixture
def opens(monkeypatch) -> list[Path]:
    """The paths :func:`open_container` opened during the test, in order (an empty memo
    at the start, so earlier tests' probes do not answer)."""
    opened: list[Path] = []
    real = probe_module.open_container

    def counted(path):
        opened.append(Path(path))
        return real(path)

    monkeypatch.setattr(probe_module, "open_container", counted)
    monkeypatch.setattr(probe_module, "_memo", type(probe_module._memo)())
    return opened


def audio_duration_s(probe) -> float:
    return probe.chosen("audio").duration_s


def test_a_repeated_probe_opens_the_file_once_and_matches_ffprobe(tmp_path, opens):
    clip = media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0)
    first = probe_media(clip, read_rotation=False)
    again = probe_media(clip, read_rotation=False)

    assert opens == [clip]
    assert again == first and again is not first
    assert audio_duration_s(again) == pytest.approx(media.ffprobe_audio_duration_s(clip), abs=1e-3)


def test_a_probe_is_the_callers_own(tmp_path, opens):
    clip = media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0)
    mine = probe_media(clip)
    mine.streams.clear()
    mine.duration_s = -1.0

    again = probe_media(clip)
    assert len(again.streams) == 2 and again.duration_s > 0
    assert opens == [clip]


def test_the_source_is_the_path_as_given(tmp_path, opens, monkeypatch):
    clip = media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0)
    assert probe_media(clip).source == str(clip)
    monkeypatch.chdir(tmp_path)
    assert probe_media("clip.mp4").source == "clip.mp4"
    assert opens == [clip]


def test_a_replaced_file_is_probed_again(tmp_path, opens):
    clip = media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0)
    longer = media.make_talking_clip(tmp_path / "longer.mp4", seconds=2.0)
    assert audio_duration_s(probe_media(clip)) == pytest.approx(1.0, abs=0.1)

    os.replace(longer, clip)  # another inode under the same name
    assert audio_duration_s(probe_media(clip)) == pytest.approx(
        media.ffprobe_audio_duration_s(clip), abs=1e-3
    )
    assert audio_duration_s(probe_media(clip)) == pytest.approx(2.0, abs=0.1)
    assert opens == [clip, clip]


def make_wav(path: Path, sample_rate: int, samples: int) -> Path:
    """A mono PCM16 wav of ``samples`` samples: its size depends on the count only."""
    media._ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}",
        "-af", f"atrim=end_sample={samples}", "-c:a", "pcm_s16le", "-fflags", "+bitexact",
        "-f", "wav", media._url(path),
    )  # fmt: skip
    return path


def test_a_file_rewritten_in_place_with_its_old_size_and_time_is_probed_again(tmp_path, opens):
    """Same inode, same size, modification time set back: the change time still moves."""
    clip = make_wav(tmp_path / "clip.wav", 16_000, 16_000)
    other = make_wav(tmp_path / "other.wav", 8_000, 16_000)
    before = clip.stat()
    assert other.stat().st_size == before.st_size
    assert probe_media(clip).chosen("audio").sample_rate_hz == 16_000

    with clip.open("r+b") as handle:  # the same inode
        handle.write(other.read_bytes())
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = clip.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )

    rewritten = probe_media(clip)
    assert opens == [clip, clip]
    expected = next(s for s in media.ffprobe_json(clip)["streams"] if s["codec_type"] == "audio")
    assert rewritten.chosen("audio").sample_rate_hz == int(expected["sample_rate"]) == 8_000


def test_rotation_is_read_when_asked_and_left_out_otherwise(tmp_path, opens):
    rotated = media.make_rotated(tmp_path / "portrait.mp4")
    without = probe_media(rotated, read_rotation=False)
    assert without.chosen("video").rotation_deg is None

    with_rotation = probe_media(rotated)  # not answered by the probe without the rotation
    assert abs(with_rotation.chosen("video").rotation_deg) == 90
    assert opens == [rotated, rotated]

    assert probe_media(rotated, read_rotation=False) == without
    assert abs(probe_media(rotated).chosen("video").rotation_deg) == 90
    assert opens == [rotated, rotated]


def test_a_probe_with_the_rotation_answers_one_without_and_leaves_it_out(tmp_path, opens):
    """The pipeline's order: the ``probe`` record (rotation read), then the wav step."""
    rotated = media.make_rotated(tmp_path / "portrait.mp4")
    fresh = probe_module._probe_media(rotated, read_rotation=False)  # the reference
    assert abs(probe_media(rotated).chosen("video").rotation_deg) == 90

    answered = probe_media(rotated, read_rotation=False)
    assert opens == [rotated, rotated]  # the reference's and the rotation probe's: no third
    assert answered.chosen("video").rotation_deg is None
    assert answered == fresh
    assert abs(probe_media(rotated).chosen("video").rotation_deg) == 90  # the memo intact


def test_an_answer_from_the_memo_is_the_callers_own_too(tmp_path, opens):
    clip = media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0)
    probe_media(clip)
    answered = probe_media(clip)
    answered.streams[0].codec = "changed"
    answered.streams.pop()
    assert [s.codec for s in probe_media(clip).streams] == ["h264", "aac"]
    assert opens == [clip]


def test_rejections_are_not_remembered(tmp_path, opens):
    target = media.make_zero_byte(tmp_path / "late.mp4")
    with pytest.raises(InputRejected, match="zero-byte file"):
        probe_media(target)

    shutil.copyfile(media.make_talking_clip(tmp_path / "clip.mp4", seconds=1.0), target)
    assert probe_media(target).chosen("audio") is not None


def test_the_memo_keeps_the_probes_used_last(tmp_path, opens, monkeypatch):
    monkeypatch.setattr(probe_module, "PROBE_MEMO_SIZE", 2)
    c0, c1, c2 = (media.make_talking_clip(tmp_path / f"c{i}.mp4", seconds=0.5) for i in range(3))
    probe_media(c0)
    probe_media(c1)
    probe_media(c0)  # answered, and now the one used last
    probe_media(c2)  # pushes out c1, the least recently used
    probe_media(c0)
    probe_media(c1)
    assert opens == [c0, c1, c2, c1]
