"""Moving the training files' audio by the measured audio-visual offset.

``AvSyncNode`` writes the offset of the speaking face (``offset_frames``, positive = audio
late: the sound of frame ``i`` is heard at frame ``i + k``). A packer asked to
(``av_offset: true``) moves the audio features it packs by that offset: frame ``i`` takes
the audio at ``t_i + k / fps`` (:attr:`~dpl_assets.packing.video_pack.PackOptions.audio_offset_s`),
which is the audio shifted ``k / fps * 16000`` samples earlier. Frames whose audio would
fall before the clip's start or after its end get silence and ``audio_mask`` False. Only
an offset the node is confident of (``in_sync``) is applied: a clip whose speaking face
could not be found keeps its audio where it is.
"""

from __future__ import annotations

from typing import Any

from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ


def audio_offset_s(record: dict[str, Any] | None) -> float:
    """Seconds to move the audio by, from an ``av_sync`` record: ``offset_seconds`` when
    the record is ``in_sync``, else 0 (also for None: no record)."""
    if not record or not record.get("in_sync") or record.get("offset_seconds") is None:
        return 0.0
    return float(record["offset_seconds"])


def offset_samples(offset_s: float, sample_rate_hz: int = AUDIO_SAMPLE_RATE_HZ) -> int:
    """The offset in audio samples (rounded): 7 frames at 25 fps are 4480 at 16 kHz."""
    return round(offset_s * sample_rate_hz)
