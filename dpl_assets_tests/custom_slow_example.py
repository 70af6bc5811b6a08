"""A slow node for the killed-worker test (``test_cluster.py``): each video takes
``seconds``, and each start is logged as "PID VIDEO" in the file ``marker`` names, so the
test knows which process to kill and what ran again."""

import os
import time
from pathlib import Path

import numpy as np

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import ArrayContract, Datatype, StorageFormat
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO

WAV_SAMPLES = Datatype(
    "wav_samples",
    StorageFormat.NPY,
    (".npy",),
    "The wav's sample count (1,) int64.",
    ArrayContract((1,), "int64"),
)


class SlowConfig(NodeConfig):
    """``SlowNode``."""

    marker: str = ""
    seconds: float = 3.0


def wav_samples(io: VideoIO, config: SlowConfig) -> dict[str, np.ndarray]:
    """(1,) int64 samples of the video's wav, after ``seconds`` of sleep."""
    with open(Path(config.marker), "a", encoding="utf-8") as marker:
        marker.write(f"{os.getpid()} {io.video_id}\n")
    time.sleep(config.seconds)
    return {"wav_samples": np.array([len(io["wav"])], np.int64)}


SlowNode = NodeSpec(
    name="SlowNode",
    inputs=("wav",),
    outputs=("wav_samples",),
    config=SlowConfig,
    summary="the wav's length, slowly",
    compute=wav_samples,
    declares=(WAV_SAMPLES,),
)
