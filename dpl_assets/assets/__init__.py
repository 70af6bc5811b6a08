"""Datatype assets: thin Dagster wiring around the node functions in :mod:`dpl_assets.nodes`.

Every asset is partitioned per video, takes and returns ``{video_id: value}`` dicts (see
:mod:`dpl_assets.storage.io_manager`) and runs its videos through
:func:`dpl_assets.assets.batch.run_videos`.
"""

import dagster as dg

from dpl_assets.assets.a2en import a2en
from dpl_assets.assets.audio import volume, wav
from dpl_assets.assets.crops import bboxes, crops
from dpl_assets.assets.dataset import dataset_pack, dataset_summary
from dpl_assets.assets.face3d import emoca, flame, rendering
from dpl_assets.assets.faces import blinks, face_alignment, head_pose
from dpl_assets.assets.packing import (
    h5_dataset,
    source_sequence,
    vid2vid_audio,
    vid2vid_dataset,
)
from dpl_assets.assets.sources import aac, probe, video
from dpl_assets.assets.vision import images
from dpl_assets.assets.visualize import contact_sheet, preview
from dpl_assets.assets.wav2vec import wav2vec

ALL_ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [
    video,
    aac,
    probe,
    wav,
    volume,
    wav2vec,
    images,
    face_alignment,
    bboxes,
    crops,
    head_pose,
    blinks,
    emoca,
    flame,
    rendering,
    h5_dataset,
    source_sequence,
    vid2vid_audio,
    vid2vid_dataset,
    a2en,
    preview,
    contact_sheet,
    dataset_pack,
    dataset_summary,
]

DATASET_LEVEL_ASSETS: frozenset[str] = frozenset(
    key.path[-1]
    for asset in ALL_ASSETS
    if isinstance(asset, dg.AssetsDefinition) and asset.partitions_def is None
    for key in asset.keys
)
"""Assets computed once over all videos (not partitioned): dataset packs, the summary."""

OP_OF: dict[str, str] = {
    key.path[-1]: asset.node_def.name
    for asset in ALL_ASSETS
    if isinstance(asset, dg.AssetsDefinition)
    for key in asset.keys
}
"""Asset key -> the op computing it (a multi-asset's outputs share one op and its config)."""
