"""Dataset-level assets, computed once over every registered video (not partitioned).

- ``dataset_pack``: the per-video packed files of one packer appended to a sharded dataset
  (:class:`~dpl_assets.packing.dataset_pack.DatasetPack`: ``index.json``, ``shard-*.h5``,
  and ``dataset.h5`` linking every video); only videos not yet in it are copied, and
  existing shards are never rewritten.
- ``dataset_summary``: durations, face coverage, rejections by reason and feature
  statistics as PNG plots plus a markdown digest shown on the materialization in the UI.
"""

from dataclasses import asdict
from typing import Literal, get_args

import dagster as dg
from pydantic import Field

from dpl_assets.datatypes import DATATYPES, StorageFormat
from dpl_assets.executors import step_tags
from dpl_assets.packing.dataset_pack import DatasetPack
from dpl_assets.report import all_video_reports
from dpl_assets.specs import NodeSpec
from dpl_assets.storage.io_manager import ArtifactStorage


class DatasetPackConfig(dg.Config):
    """``DatasetPackNode``: append every video's packed file to one sharded dataset."""

    source: Literal["h5_dataset", "source_sequence", "vid2vid_audio", "vid2vid_dataset"] = Field(
        default="h5_dataset", description="Which per-video packed files to collect."
    )
    max_videos_per_shard: int = Field(default=1000, ge=1, description="Videos per shard file.")
    max_shard_gb: float = Field(default=4.0, gt=0, description="Shard size limit, GB.")


class DatasetSummaryConfig(dg.Config):
    """``DatasetSummaryNode``: plots and a markdown digest over every registered video."""


PACKED_SOURCES = list(get_args(DatasetPackConfig.model_fields["source"].annotation))
"""The per-video training files a dataset pack may collect (its ``source`` param's values)."""
SUMMARY_INPUTS = ["probe", "faces", "volume", "wav2vec"]


@dg.asset(
    group_name="datasets",
    op_tags=step_tags(needs_gpu=False),
    deps=PACKED_SOURCES,
)
def dataset_pack(
    context: dg.AssetExecutionContext, config: DatasetPackConfig, storage: ArtifactStorage
) -> dg.MaterializeResult:
    """Every video's ``source`` file in one appendable, sharded HDF5 dataset
    (``dataset_pack/{source}/``; ``DatasetPackNode``)."""
    store = storage.store()
    pack = DatasetPack(
        store.output_dir / "dataset_pack" / config.source,
        max_videos_per_shard=config.max_videos_per_shard,
        max_shard_bytes=int(config.max_shard_gb * 1024**3),
    )
    packed = {
        video_id: path
        for video_id in store.catalog.entries()
        if (path := store.artifact_path(config.source, video_id)).exists()
    }
    added = pack.append(packed)
    context.log.info(f"dataset_pack: {len(added)} videos added, {len(pack)} in the pack")
    return dg.MaterializeResult(
        metadata={
            "videos_added": len(added),
            "videos": len(pack),
            "shards": len(pack.shards),
            "index": dg.MetadataValue.path(str(pack.index_path)),
            "one_file": dg.MetadataValue.path(str(pack.links_path)),
        }
    )


def per_video_keys_present(output_dir) -> list[str]:
    """Per-video datatypes with a folder in the output dir (what the summary reports on)."""
    return [
        key
        for key, datatype in DATATYPES.items()
        if datatype.storage is not StorageFormat.MEDIA and (output_dir / key).is_dir()
    ]


@dg.asset(
    group_name="datasets",
    op_tags=step_tags(needs_gpu=False),
    deps=SUMMARY_INPUTS,
)
def dataset_summary(
    context: dg.AssetExecutionContext, config: DatasetSummaryConfig, storage: ArtifactStorage
) -> dg.MaterializeResult:
    """Plots and a digest over every registered video (``dataset_summary/``;
    ``DatasetSummaryNode``): durations, face coverage, rejections by reason, features."""
    # matplotlib loads with the summary's first run, not with every code location.
    from dpl_assets.visualize.summary import collect_summary_inputs, summarize

    store = storage.store()
    keys = per_video_keys_present(store.output_dir)
    # The same entries as report.json: registered videos and files refused at discovery.
    reports = [asdict(report) for report in all_video_reports(store, keys)]
    folder = store.output_dir / "dataset_summary"
    markdown = summarize(collect_summary_inputs(store.output_dir, reports), folder)
    context.log.info(f"dataset_summary: {len(reports)} videos")
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md(markdown),
            "videos": len(reports),
            "folder": dg.MetadataValue.path(str(folder)),
        }
    )


DATASET_PACK_NODE = NodeSpec(
    name="DatasetPackNode",
    outputs=("dataset_pack",),
    config=DatasetPackConfig,
    configured_inputs="source",
    summary="every video's packed file in one appendable, sharded HDF5 dataset + index",
    asset=dataset_pack,
)
DATASET_SUMMARY_NODE = NodeSpec(
    name="DatasetSummaryNode",
    optional_inputs=tuple(SUMMARY_INPUTS),
    outputs=("dataset_summary",),
    config=DatasetSummaryConfig,
    summary="plots and a markdown digest over every registered video",
    asset=dataset_summary,
)
