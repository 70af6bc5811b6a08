"""A custom node on the audio, using what built-in nodes use: a model made per worker thread
(``model``), a batch over the step's videos (``compute_many``), a param it cannot run
without (``required_params``) and the step's totals (``summarize``).

A graph names it ``"dpl_assets_tests.custom_audio_example:ClipLevelNode"``, or
``"ClipLevelNode"`` once a package registers it in the ``dpl_assets.nodes`` entry-point
group (``test_custom_node.py`` does both, and runs it from the new-video sensor).
"""

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import AUDIO_SAMPLE_RATE_HZ, Datatype, StorageFormat
from dpl_assets.outcomes import InputRejected
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO

CLIP_LEVEL = Datatype(
    "clip_level",
    StorageFormat.JSON,
    (".json",),
    "Level of the clip's 16 kHz audio: peak (0..1 of full scale), RMS (dBFS), seconds.",
)


class ClipLevelConfig(NodeConfig):
    """``ClipLevelNode``."""

    floor_dbfs: float | None = Field(
        default=None, lt=0, description="Level given to silence, dBFS (e.g. -90); required."
    )


class LevelMeter:
    """The node's "model": measures float32 (N,) samples in [-1, 1]. Made once per worker
    thread of a step, closed at the step's end."""

    def __init__(self, floor_dbfs: float, device: str):
        self.floor_dbfs, self.device, self.closed = floor_dbfs, device, False

    def measure(self, samples: np.ndarray) -> dict[str, float]:
        """``peak`` max |x|, ``rms_dbfs`` 20 log10 of the RMS (``floor_dbfs`` at least),
        ``seconds`` of audio at 16 kHz. Raises InputRejected for empty audio."""
        if self.closed:
            raise RuntimeError("meter used after its step ended")
        if samples.size == 0:
            raise InputRejected("no audio samples")
        rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
        floor = 10 ** (self.floor_dbfs / 20)
        return {
            "peak": float(np.max(np.abs(samples))),
            "rms_dbfs": 20 * float(np.log10(max(rms, floor))),
            "seconds": samples.size / AUDIO_SAMPLE_RATE_HZ,
        }

    def close(self) -> None:
        self.closed = True


def level_meter(config: ClipLevelConfig, device: Callable[[], str]) -> LevelMeter:
    """The ``model`` factory; asking for ``device()`` is optional (a CPU meter needs none)."""
    assert config.floor_dbfs is not None  # required_params: the step fails before this
    return LevelMeter(config.floor_dbfs, "cpu")


def clip_level(io: VideoIO, config: ClipLevelConfig) -> dict[str, dict[str, float]]:
    """One video's level record (see :meth:`LevelMeter.measure`)."""
    return {"clip_level": io.model.measure(io["wav"])}


def clip_levels(ios: dict[str, VideoIO], config: ClipLevelConfig) -> dict[str, dict[str, Any]]:
    """The step's videos at once (a model batching across videos would do this); a video
    left out goes through :func:`clip_level`."""
    return {video_id: clip_level(io, config) for video_id, io in ios.items()}


def level_totals(per_output: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The step's totals on its output: videos measured, the loudest RMS (dBFS)."""
    records = [r for r in per_output["clip_level"].values() if isinstance(r, dict)]
    loudest = max((r["rms_dbfs"] for r in records), default=None)
    return {"clip_level": {"videos_measured": len(records), "loudest_rms_dbfs": loudest}}


ClipLevelNode = NodeSpec(
    name="ClipLevelNode",
    inputs=("wav",),
    outputs=("clip_level",),
    config=ClipLevelConfig,
    summary="peak and RMS level of the clip's audio",
    compute=clip_level,
    declares=(CLIP_LEVEL,),
    model=level_meter,
    compute_many=clip_levels,
    required_params=("floor_dbfs",),
    summarize=level_totals,
)
