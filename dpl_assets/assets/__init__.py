"""Datatype assets: thin Dagster wiring around the node functions in :mod:`dpl_assets.nodes`,
and :data:`NODE_SPECS`, the registry list of every built-in graph node.

Every asset is partitioned per video, takes and returns ``{video_id: value}`` dicts (see
:mod:`dpl_assets.storage.io_manager`) and runs its videos through
:func:`dpl_assets.assets.batch.run_videos_multi`. Each node is declared once, as a
:class:`~dpl_assets.specs.NodeSpec` beside its asset (or with a ``compute`` function its
asset is generated from); adding a node is one module and one line in :data:`NODE_SPECS`.
"""

from collections.abc import Sequence

import dagster as dg

from dpl_assets.assets.a2en import A2EN_DATASET_NODE
from dpl_assets.assets.aligned_crops import ALIGNED_CROP_NODE
from dpl_assets.assets.audio import AAC_TO_WAV_NODE, VIDEO_TO_WAV_NODE, VOLUME_NODE
from dpl_assets.assets.av_sync import AV_SYNC_NODE
from dpl_assets.assets.crops import (
    CROP_NODE,
    EMOCA_LIKE_BBOXES_NODE,
    FIXED_BBOXES_NODE,
    TRANSFORM_RAW_BBOXES_NODE,
)
from dpl_assets.assets.dataset import DATASET_PACK_NODE, DATASET_SUMMARY_NODE
from dpl_assets.assets.face3d import (
    EMOCA_FROM_IMAGES_NODE,
    EMOCA_NODE,
    FLAME_NODE,
    RENDERING_NODE,
)
from dpl_assets.assets.faces import (
    BLINKS_NODE,
    FACE_ALIGNMENT_NODE,
    FACE_DETECTION_NODE,
    FACE_LANDMARKS_NODE,
    HEAD_POSE_NODE,
)
from dpl_assets.assets.generated import assets_of
from dpl_assets.assets.packing import (
    H5_DATASET_NODE,
    SOURCE_SEQUENCE_NODE,
    VID2VID_AUDIO_NODE,
    VID2VID_DATASET_NODE,
)
from dpl_assets.assets.quality import FRAME_QUALITY_NODE
from dpl_assets.assets.scenes import SCENE_CUT_NODE
from dpl_assets.assets.segments import SEGMENT_NODE
from dpl_assets.assets.sources import PROBE_NODE, aac, video
from dpl_assets.assets.speech import SPEECH_NODE
from dpl_assets.assets.vision import VIDEO_TO_IMAGES_NODE
from dpl_assets.assets.visualize import CONTACT_SHEET_NODE, PREVIEW_NODE
from dpl_assets.assets.wav2vec import WAV2VEC_NODE
from dpl_assets.datatypes import DATATYPES, get_datatype
from dpl_assets.specs import NodeSpec

NODE_SPECS: list[NodeSpec] = [
    PROBE_NODE,
    VIDEO_TO_WAV_NODE,
    AAC_TO_WAV_NODE,
    VOLUME_NODE,
    VIDEO_TO_IMAGES_NODE,
    FACE_ALIGNMENT_NODE,
    FACE_DETECTION_NODE,
    FACE_LANDMARKS_NODE,
    TRANSFORM_RAW_BBOXES_NODE,
    FIXED_BBOXES_NODE,
    EMOCA_LIKE_BBOXES_NODE,
    CROP_NODE,
    HEAD_POSE_NODE,
    BLINKS_NODE,
    ALIGNED_CROP_NODE,
    FRAME_QUALITY_NODE,
    AV_SYNC_NODE,
    EMOCA_NODE,
    EMOCA_FROM_IMAGES_NODE,
    FLAME_NODE,
    RENDERING_NODE,
    H5_DATASET_NODE,
    SOURCE_SEQUENCE_NODE,
    VID2VID_AUDIO_NODE,
    VID2VID_DATASET_NODE,
    A2EN_DATASET_NODE,
    PREVIEW_NODE,
    CONTACT_SHEET_NODE,
    DATASET_PACK_NODE,
    DATASET_SUMMARY_NODE,
    WAV2VEC_NODE,
    SPEECH_NODE,
    SCENE_CUT_NODE,
    SEGMENT_NODE,
]
"""Every built-in graph node, in the order ``dpl nodes`` and ``docs/nodes.md`` list them."""

SOURCE_ASSETS: list[dg.AssetSpec] = [video, aac]
"""The user's files: registered, never computed."""


ALL_ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [
    *SOURCE_ASSETS,
    *assets_of(NODE_SPECS),
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
"""Asset key -> the op computing it (a multi-asset's outputs share one op and its config);
custom nodes' assets are added by :func:`assets_with`."""


def assets_with(
    custom: Sequence[NodeSpec], packed: Sequence[str] = ()
) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    """Every asset, with those of the ``custom`` nodes. Packers also depend on the custom
    outputs they could pack and on the datatypes the graph asks them to pack (``packed``),
    so those run before them."""
    packable = [key for spec in custom for key in spec.outputs if get_datatype(key).packable]
    extra_deps = [
        key
        for key in dict.fromkeys([*packed, *packable])
        if key in DATATYPES and DATATYPES[key].packable
    ]
    if not custom and not extra_deps:
        return ALL_ASSETS
    extra = assets_of(custom)
    for asset in extra:
        OP_OF.update({key.path[-1]: asset.node_def.name for key in asset.keys})
    return [*SOURCE_ASSETS, *assets_of(NODE_SPECS, extra_deps), *extra]


def producers_of(key: str) -> list[NodeSpec]:
    """The built-in nodes whose main output is ``key`` (else those writing it at all)."""
    main = [spec for spec in NODE_SPECS if spec.main == key]
    return main or [spec for spec in NODE_SPECS if key in spec.outputs]
