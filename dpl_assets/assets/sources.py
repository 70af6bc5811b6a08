"""Source datatypes (the user's files) and the per-video ``probe`` record (``ProbeNode``)."""

from pathlib import Path

import dagster as dg

from dpl_assets.assets.config import NodeConfig
from dpl_assets.media.probe import probe_media
from dpl_assets.partitions import video_partitions
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.video_io import VideoIO


class ProbeConfig(NodeConfig):
    pass


video = dg.AssetSpec(
    "video",
    partitions_def=video_partitions,
    group_name="sources",
    description="The user's videos, registered from the `video` input roots (see catalog.sqlite).",
)

aac = dg.AssetSpec(
    "aac",
    partitions_def=video_partitions,
    group_name="sources",
    description="Optional AAC audio files (.m4a/.aac) matched to videos by relative path.",
)


def describe(io: VideoIO, config: ProbeConfig) -> dict[str, dict]:
    """Per-video record (JSON): source path, size, container, duration, streams, rotation.

    Header values as the container states them. Rejects missing, empty and unreadable files.
    """
    record = probe_media(Path(io.primary_source)).to_json()
    return {"probe": {"video_id": io.video_id, **record, "sources": io.sources}}


PROBE_NODE = NodeSpec(
    name="ProbeNode",
    inputs=("video",),
    outputs=("probe",),
    config=ProbeConfig,
    summary="container, duration, streams and rotation as the header states them (JSON)",
    compute=describe,
    group="sources",
)
