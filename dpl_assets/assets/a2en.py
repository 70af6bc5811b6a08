"""``A2enDatasetNode``: one ``.npz`` per video for audio-to-expression training (A2EN).

Contents (as the original): ``wav2vec`` (N, D) and ``volume`` (N,) resampled onto the N
expression frames by timestamps (linear, see :mod:`dpl_assets.packing.resample`), ``exp``
(N, E), ``jaw`` (N, 3) (the jaw part of ``pose``), ``left_blink``, ``right_blink``,
``average_blink`` (N,) eye opening from the FLAME 3D landmarks (the blink definition of
:mod:`dpl_assets.nodes.blinks`, Euclidean in 3D), ``timestamps`` (N,) seconds and
``audio_mask`` (N,) bool: False on frames at or after the end of the wav, whose
``wav2vec`` and ``volume`` are silence (0), never the last audio step held. Frame times
follow the one rule (:meth:`dpl_assets.storage.video_io.VideoIO.frame_times`): ``i / fps`` with
the ``fps`` parameter (parameters brought from elsewhere), else the ``images``
timestamps. A video with empty audio is rejected.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from dpl_assets.assets.config import NodeConfig
from dpl_assets.nodes.blinks import eye_openness
from dpl_assets.outcomes import InputRejected, StagedFile
from dpl_assets.packing.video_pack import frames_audio_mask, resample_audio_feature
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class A2enConfig(NodeConfig):
    """``A2enDatasetNode``: the A2EN training file per video."""

    fps: float | None = Field(
        default=None, gt=0, description="Frame rate of exp; default: the images' timestamps."
    )


JAW = slice(3, 6)


def a2en_arrays(
    inputs: Mapping[str, Any],
    times: np.ndarray,
    audio_samples: int | None = None,
    gaps: Sequence[Sequence[float]] = (),
) -> dict[str, np.ndarray]:
    """The file's arrays from one video's wav2vec, volume, exp, pose and landmarks3d.

    ``audio_samples``: the wav's length (where the audio ends); None: what the features
    account for. Frames after the audio's end, or in ``gaps`` (spans of damaged audio),
    get silence and ``audio_mask`` False.
    """
    if inputs["wav2vec"].shape[0] == 0 or inputs["volume"].shape[0] == 0:
        raise InputRejected("empty audio: no wav2vec steps to align with the expressions")
    count = inputs["exp"].shape[0]
    for key in ("pose", "landmarks3d"):
        if inputs[key].shape[0] != count:
            raise InputRejected(f"{key} has {inputs[key].shape[0]} frames, exp has {count}")
    audio = {key: inputs[key] for key in ("wav2vec", "volume")}
    with_audio = frames_audio_mask(times, audio, audio_samples, gaps)
    blinks = eye_openness(inputs["landmarks3d"])
    return {
        "wav2vec": resample_audio_feature("wav2vec", audio["wav2vec"], times, 0, with_audio),
        "volume": resample_audio_feature("volume", audio["volume"], times, 0, with_audio),
        "audio_mask": with_audio,
        "exp": inputs["exp"].astype(np.float32),
        "jaw": inputs["pose"][:, JAW].astype(np.float32),
        "left_blink": blinks[:, 0],
        "right_blink": blinks[:, 1],
        "average_blink": blinks[:, 2],
        "timestamps": times,
    }


def write_a2en(io: VideoIO, config: A2enConfig) -> dict[str, StagedFile]:
    """A2EN ``.npz`` of the video: audio features on the expression frames, expressions,
    jaw pose and blinks (see the module docstring)."""
    times = io.frame_times(io["exp"].shape[0], config.fps)
    staged = io.stage("a2en")
    np.savez(staged, **a2en_arrays(io, times, io.wav_samples(), io.audio_gaps()))
    return {"a2en": StagedFile(staged)}


A2EN_DATASET_NODE = NodeSpec(
    name="A2enDatasetNode",
    inputs=("wav2vec", "volume", "exp", "pose", "landmarks3d"),
    outputs=("a2en",),
    config=A2enConfig,
    summary="A2EN training file: audio features on the expression frames, jaw, blinks",
    optional_inputs=("images", "wav"),  # frame times; where the audio ends
    compute=write_a2en,
    group="flame",
)
