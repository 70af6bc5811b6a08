"""Packed training files: ``H5DatasetNode`` and the original's packer presets.

Each packer is a per-video asset writing one HDF5 file (:mod:`dpl_assets.packing.video_pack`)
with the datatypes its ``datatypes`` parameter names; the presets differ only in defaults.
A video missing a requested datatype's rejection carries it (the packer rejects with the
same reason); a datatype not yet produced fails the video (retried on a later run).
"""

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from dpl_assets.assets.batch import load_required, per_video_asset, run_videos
from dpl_assets.assets.config import (
    PACKABLE,
    H5DatasetConfig,
    SourceSequenceConfig,
    Vid2vidAudioConfig,
    Vid2vidDatasetConfig,
)
from dpl_assets.assets.dependencies import CONFIGURED_INPUTS
from dpl_assets.datatypes import StorageFormat, get_datatype
from dpl_assets.outcomes import InputRejected, StagedFile
from dpl_assets.packing.video_pack import PackOptions, pack_video, resample_audio_feature
from dpl_assets.storage.image_stack import ImageStack
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.store import ArtifactStore

AUDIO_RATE_KEYS = ("wav2vec", "volume")
AUDIO_BLINK_FEATURE = "audio_blink_feature"


def frame_times(
    store: ArtifactStore, video_id: str, keys: list[str], fps: float | None
) -> np.ndarray:
    """(N,) seconds of the frames: the first image stack's timestamps, or i / fps."""
    stacks = [k for k in keys if get_datatype(k).storage is StorageFormat.IMAGE_STACK]
    reference = stacks[0] if stacks else "images"
    path = load_required(store, reference, video_id)
    with ImageStack(path, reference) as stack:
        count = len(stack)
        times = np.asarray(stack.timestamps, np.float64)
    return np.arange(count, dtype=np.float64) / fps if fps else times


def pack_one(
    store: ArtifactStore, asset: str, video_id: str, config: H5DatasetConfig
) -> StagedFile:
    """Pack one video's requested datatypes into a staged file for the IO manager."""
    keys: list[str] = list(dict.fromkeys(config.datatypes))
    times = frame_times(store, video_id, keys, config.fps)
    image_stacks: dict[str, Path] = {}
    arrays: dict[str, np.ndarray] = {}
    audio: dict[str, np.ndarray] = {}
    for key in keys:
        value = load_required(store, key, video_id)
        if get_datatype(key).storage is StorageFormat.IMAGE_STACK:
            image_stacks[key] = value
        elif key in AUDIO_RATE_KEYS:
            audio[key] = value
        else:
            arrays[key] = value
    options = PackOptions(
        image_format=config.image_format,
        jpeg_quality=config.jpeg_quality,
        layout=config.layout,
        smooth_window=config.window_size,
    )
    if config.audio_blink_feature:
        arrays[AUDIO_BLINK_FEATURE] = audio_blink_feature(audio, arrays["blinks"], times, options)
    staged = store.staging_path(asset, video_id)
    try:
        pack_video(
            staged, video_id=video_id, frame_times=times, image_stacks=image_stacks,
            arrays=arrays, audio_features=audio, options=options,
            attrs={"node": asset, "source": store.catalog.entry(video_id).primary_source},
        )  # fmt: skip
    except ValueError as error:  # lengths disagree: this video's inputs do not fit together
        raise InputRejected(f"cannot pack {asset}: {error}") from error
    return StagedFile(staged)


def audio_blink_feature(
    audio: dict[str, np.ndarray], blinks: np.ndarray, times: np.ndarray, options: PackOptions
) -> np.ndarray:
    """The original Vid2vidAudioNode's per-frame feature: float32 (N, D + 3).

    wav2vec (D) and volume (1) resampled onto the frames and smoothed exactly as their own
    datasets in the file, then the left and right eye opening (NaN where no face).
    """
    parts = [
        resample_audio_feature(key, audio[key], times, options.smooth_window).reshape(
            len(times), -1
        )
        for key in AUDIO_RATE_KEYS
    ]
    return np.concatenate([*parts, blinks[:, :2]], axis=1).astype(np.float32)


def packer_asset(name: str, config_class: type[H5DatasetConfig], node: str) -> Any:
    """A per-video packer asset named ``name`` taking ``config_class``."""
    defaults = config_class.model_fields["datatypes"].default

    @per_video_asset(
        name=name,
        group_name="datasets",
        deps=list(defaults),
        metadata={CONFIGURED_INPUTS: "datatypes"},
        description=f"``{node}``: one training HDF5 file per video ({', '.join(defaults)} by "
        "default; any of " + ", ".join(PACKABLE) + ").",
    )
    def _packer(
        context: dg.AssetExecutionContext,
        config: config_class,  # type: ignore[valid-type]  # Dagster reads the class at runtime
        storage: ArtifactStorage,
    ) -> dict:
        store = storage.store()
        settings: H5DatasetConfig = config

        return run_videos(
            context, store, recompute=settings.recompute, inputs={},
            compute_one=lambda video_id, _: pack_one(store, name, video_id, settings),
            workers=settings.num_jobs,
        )  # fmt: skip

    return _packer


h5_dataset = packer_asset("h5_dataset", H5DatasetConfig, "H5DatasetNode")
source_sequence = packer_asset("source_sequence", SourceSequenceConfig, "SourceSequenceNode")
vid2vid_audio = packer_asset("vid2vid_audio", Vid2vidAudioConfig, "Vid2vidAudioNode")
vid2vid_dataset = packer_asset("vid2vid_dataset", Vid2vidDatasetConfig, "Vid2vidDatasetNode")

PACKER_ASSETS = [h5_dataset, source_sequence, vid2vid_audio, vid2vid_dataset]
