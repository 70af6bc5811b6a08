"""Source datatypes (the user's files) and the per-video ``probe`` record."""

from pathlib import Path

import dagster as dg

from dpl_assets.assets.batch import per_video_asset, run_videos
from dpl_assets.assets.config import ProbeConfig
from dpl_assets.media.probe import probe_media
from dpl_assets.partitions import video_partitions
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage
from dpl_assets.storage.video_io import VideoIO

video = dg.AssetSpec(
    "video",
    partitions_def=video_partitions,
    group_name="sources",
    description="The user's videos, registered from the `video` input roots (see catalog.json).",
)

aac = dg.AssetSpec(
    "aac",
    partitions_def=video_partitions,
    group_name="sources",
    description="Optional AAC audio files (.m4a/.aac) matched to videos by relative path.",
)


@per_video_asset(
    deps=[video],
    group_name="sources",
)
def probe(context: dg.AssetExecutionContext, config: ProbeConfig, storage: ArtifactStorage) -> dict:
    """Per-video record (JSON): source path, size, container, duration, streams, rotation.

    Header values as the container states them. Rejects missing, empty and unreadable files.
    """

    def describe(video_id: str, io: VideoIO) -> dict:
        record = probe_media(Path(io.primary_source)).to_json()
        return {"video_id": video_id, **record, "sources": io.sources}

    return run_videos(context, storage, recompute=config.recompute, inputs={}, compute_one=describe)


PROBE_NODE = NodeSpec(
    name="ProbeNode",
    inputs=("video",),
    outputs=("probe",),
    config=ProbeConfig,
    summary="container, duration, streams and rotation as the header states them (JSON)",
    asset=probe,
)
