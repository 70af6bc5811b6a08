"""Packed training files: ``H5DatasetNode`` and the original's packer presets.

Each packer is a per-video asset writing one HDF5 file (:mod:`dpl_assets.packing.video_pack`)
with the datatypes its ``datatypes`` parameter names; the presets differ only in defaults.
A video missing a requested datatype's rejection carries it (the packer rejects with the
same reason); a datatype not yet produced fails the video (retried on a later run).

Validity: every training file holds ``face_mask`` (N,) (1 detected, 2 interpolated, 0 no
face) whenever the video has the face node's ``face_mask`` for these frames, named in
``datatypes`` or not, and ``audio_mask`` (N,) whenever it holds audio features (frames
after the audio's end have silence there). Frame times come from the one rule,
:meth:`dpl_assets.storage.video_io.VideoIO.frame_times`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from dpl_assets.assets.config import NodeConfig
from dpl_assets.datatypes import (
    AUDIO_REFERENCE,
    AUDIO_STEP,
    DATATYPES,
    FRAME_REFERENCE,
    StorageFormat,
    get_datatype,
    packable_keys,
)
from dpl_assets.outcomes import InputRejected, StagedFile
from dpl_assets.packing.av_offset import audio_offset_s
from dpl_assets.packing.video_pack import (
    FACE_MASK_KEY,
    PackOptions,
    frames_audio_mask,
    pack_video,
    resample_audio_feature,
)
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class H5DatasetConfig(NodeConfig):
    """``H5DatasetNode``: one training HDF5 file per video with the chosen datatypes.

    Every file also gets the per-frame validity data: ``face_mask`` whenever the video has
    the face node's (named in ``datatypes`` or not) and ``audio_mask`` with audio features.
    """

    datatypes: list[str] = Field(
        default=["images", "crops", "landmarks", "bboxes", "head_pose", "blinks", "volume"],
        min_length=1,
        description="Datatypes to include; audio features are resampled onto the frames "
        "(silence and audio_mask False after the audio's end); face_mask is added whenever "
        "the video has one.",
    )
    image_format: Literal["jpeg", "png"] = Field(default="jpeg", description="Stored images.")
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality.")
    layout: Literal["vlen", "filter32019"] = Field(
        default="vlen",
        description="'vlen' (plain h5py) or 'filter32019' (the original's jpegHDF5 files).",
    )
    window_size: int = Field(
        default=0, ge=0, description="Moving average (frames) over resampled audio; 0 = none."
    )
    fps: float | None = Field(
        default=None, gt=0, description="Frame times i / fps instead of the frames' timestamps."
    )
    audio_blink_feature: bool = Field(
        default=False,
        description="Add audio_blink_feature (N, D + 3): wav2vec, volume, left and right eye "
        "opening per frame (needs wav2vec, volume and blinks in datatypes).",
    )
    av_offset: bool = Field(
        default=False,
        description="Move the audio features by AvSyncNode's measured offset (when it is "
        "in_sync): frame i takes the audio at t_i + offset.",
    )
    num_jobs: int = Field(default=2, ge=1, description="Videos packed in parallel.")

    @field_validator("datatypes")
    @classmethod
    def _packable(cls, datatypes: list[str]) -> list[str]:
        # Dagster config cannot take a list of Literals; the registry says what is packable
        # (image stacks, per-frame and audio-step arrays, custom nodes' ones too).
        packable = packable_keys()
        unknown = [key for key in datatypes if key not in DATATYPES]
        if unknown:
            raise ValueError(
                f"unknown datatypes {unknown}: not built in, and no node loaded declares them; "
                "a custom node's datatypes are known once the node writing them is in the graph "
                "(or in DPL_NODES, for the Dagster UI); "
                f"packable datatypes: {', '.join(packable)}"
            )
        unpackable = [key for key in datatypes if key not in packable]
        if unpackable:
            raise ValueError(f"cannot pack {unpackable}; packable datatypes: {', '.join(packable)}")
        return datatypes

    @model_validator(mode="after")
    def _feature_inputs(self) -> "H5DatasetConfig":
        missing = {"wav2vec", "volume", "blinks"} - set(self.datatypes)
        if self.audio_blink_feature and missing:
            raise ValueError(f"audio_blink_feature needs {sorted(missing)} in datatypes")
        return self


class SourceSequenceConfig(H5DatasetConfig):
    """``SourceSequenceNode``: the original's source sequence: frames, boxes, crops, FLAME
    parameters, landmarks (2D and 3D), renders and blinks."""

    datatypes: list[str] = Field(
        default=[
            "images", "bboxes", "crops", "shape", "exp", "pose", "cam", "light", "landmarks",
            "landmarks3d", "render_uv", "render_normal", "blinks",
        ],
        min_length=1,
    )  # fmt: skip


class Vid2vidDatasetConfig(H5DatasetConfig):
    """``Vid2vidDatasetNode``: crops with their UV and normal renders."""

    datatypes: list[str] = Field(default=["crops", "render_uv", "render_normal"], min_length=1)


class Vid2vidAudioConfig(H5DatasetConfig):
    """``Vid2vidAudioNode``: crops + wav2vec/volume on the crop frames, smoothed, and
    ``audio_blink_feature`` (N, D + 3) = wav2vec, volume, left and right eye opening."""

    datatypes: list[str] = Field(default=["crops", "wav2vec", "volume", "blinks"], min_length=1)
    window_size: int = Field(
        default=16, ge=0, description="Moving average (frames) over resampled audio; 0 = none."
    )
    audio_blink_feature: bool = Field(
        default=True, description="Add audio_blink_feature (N, D + 3) (see H5DatasetNode)."
    )


AUDIO_BLINK_PARTS = ("wav2vec", "volume")
"""The audio features of the original Vid2vidAudioNode's per-frame feature, in its order."""
AUDIO_BLINK_FEATURE = "audio_blink_feature"


AV_SYNC_KEY = "av_sync"


def frame_times(io: VideoIO, keys: list[str], fps: float | None) -> np.ndarray:
    """(N,) seconds of the frames of a training file: N is the first requested image
    stack's frame count (else the reference stack's), the times by the one rule
    (:meth:`~dpl_assets.storage.video_io.VideoIO.frame_times`)."""
    stacks = [k for k in keys if get_datatype(k).storage is StorageFormat.IMAGE_STACK]
    reference = stacks[0] if stacks else FRAME_REFERENCE
    return io.frame_times(len(io[reference]), fps, (reference,))


def face_mask_for(io: VideoIO, count: int) -> np.ndarray | None:
    """The face node's ``face_mask`` (count,) of the video, or None when it has none (not
    computed, rejected, or for other frames than these ``count``)."""
    value = io.optional(FACE_MASK_KEY)
    if value is None:
        return None
    mask = np.asarray(value)
    return mask if mask.ndim == 1 and mask.shape[0] == count else None


def pack_one(io: VideoIO, asset: str, config: H5DatasetConfig) -> StagedFile:
    """Pack one video's requested datatypes into a staged file for the IO manager."""
    keys: list[str] = list(dict.fromkeys(config.datatypes))
    times = frame_times(io, keys, config.fps)
    image_stacks: dict[str, Path] = {}
    arrays: dict[str, np.ndarray] = {}
    audio: dict[str, np.ndarray] = {}
    for key in keys:
        value, datatype = io[key], get_datatype(key)
        if datatype.storage is StorageFormat.IMAGE_STACK:
            image_stacks[key] = value.path
        elif datatype.per == AUDIO_STEP:
            audio[key] = value
        else:
            arrays[key] = value
    options = PackOptions(
        image_format=config.image_format,
        jpeg_quality=config.jpeg_quality,
        layout=config.layout,
        smooth_window=config.window_size,
        audio_offset_s=audio_offset_s(io.optional(AV_SYNC_KEY)) if config.av_offset else 0.0,
    )
    if FACE_MASK_KEY not in arrays:
        face_mask = face_mask_for(io, len(times))
        if face_mask is not None:
            arrays[FACE_MASK_KEY] = face_mask
    samples = io.wav_samples() if audio else None
    gaps = io.audio_gaps() if audio else []
    derived: tuple[str, ...] = ()
    if config.audio_blink_feature:
        audio_times = times + options.audio_offset_s
        with_audio = frames_audio_mask(audio_times, audio, samples, gaps)
        arrays[AUDIO_BLINK_FEATURE] = audio_blink_feature(
            audio, arrays["blinks"], audio_times, options, with_audio
        )
        derived = (AUDIO_BLINK_FEATURE,)
    staged = io.stage(asset)
    try:
        pack_video(
            staged, video_id=io.video_id, frame_times=times, image_stacks=image_stacks,
            arrays=arrays, audio_features=audio, options=options,
            attrs={"node": asset, "source": io.primary_source},
            audio_samples=samples, audio_derived=derived, audio_gaps=gaps,
        )  # fmt: skip
    except ValueError as error:  # lengths disagree: this video's inputs do not fit together
        raise InputRejected(f"cannot pack {asset}: {error}") from error
    return StagedFile(staged)


def audio_blink_feature(
    audio: dict[str, np.ndarray],
    blinks: np.ndarray,
    times: np.ndarray,
    options: PackOptions,
    with_audio: np.ndarray | None = None,
) -> np.ndarray:
    """The original Vid2vidAudioNode's per-frame feature: float32 (N, D + 3).

    wav2vec (D) and volume (1) resampled onto the frames and smoothed exactly as their own
    datasets in the file (silence on frames after the audio's end, ``with_audio`` False;
    None: from the features), then the left and right eye opening (NaN where no face).
    """
    if with_audio is None:
        with_audio = frames_audio_mask(times, audio)
    parts = [
        resample_audio_feature(key, audio[key], times, options.smooth_window, with_audio).reshape(
            len(times), -1
        )
        for key in AUDIO_BLINK_PARTS
    ]
    return np.concatenate([*parts, blinks[:, :2]], axis=1).astype(np.float32)


def packer_compute(asset: str) -> Callable[[VideoIO, H5DatasetConfig], dict[str, StagedFile]]:
    """The compute function of the packer writing ``asset`` files."""

    def pack(io: VideoIO, config: H5DatasetConfig) -> dict[str, StagedFile]:
        return {asset: pack_one(io, asset, config)}

    pack.__doc__ = (
        "One training HDF5 file per video with the datatypes ``datatypes`` names (any of "
        + ", ".join(packable_keys())
        + "); images as JPEG/PNG in the chosen ``layout``, audio features resampled onto "
        "the frames, ``face_mask`` and ``audio_mask`` for validity."
    )
    return pack


def packer_node(
    name: str, asset: str, config_class: type[H5DatasetConfig], summary: str
) -> NodeSpec:
    """The spec of a packer: it reads the datatypes its ``datatypes`` param names."""
    return NodeSpec(
        name=name,
        outputs=(asset,),
        config=config_class,
        configured_inputs="datatypes",
        # face_mask for validity; the frames' times; where the audio ends; the offset.
        optional_inputs=(FACE_MASK_KEY, FRAME_REFERENCE, AUDIO_REFERENCE, AV_SYNC_KEY),
        summary=summary,
        compute=packer_compute(asset),
        group="datasets",
    )


H5_DATASET_NODE = packer_node(
    "H5DatasetNode", "h5_dataset", H5DatasetConfig,
    "one training HDF5 file per video with the datatypes named (any packable one)",
)  # fmt: skip
SOURCE_SEQUENCE_NODE = packer_node(
    "SourceSequenceNode", "source_sequence", SourceSequenceConfig,
    "the original's source sequence: frames, boxes, crops, FLAME parameters, renders",
)  # fmt: skip
VID2VID_AUDIO_NODE = packer_node(
    "Vid2vidAudioNode", "vid2vid_audio", Vid2vidAudioConfig,
    "crops with wav2vec, volume and blinks on the crop frames",
)  # fmt: skip
VID2VID_DATASET_NODE = packer_node(
    "Vid2vidDatasetNode", "vid2vid_dataset", Vid2vidDatasetConfig,
    "crops with their UV and normal renders",
)  # fmt: skip
