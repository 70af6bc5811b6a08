"""Run a seed-style graph through Dagster on a persistent local instance.

Used by ``dpl run``: register the videos as partitions, work out which (video, datatype)
pairs are not done yet, materialize them in runs of up to ``chunk_size`` videos (models load
once per process), then read every video's outcome off the store into ``report.json``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from dpl_assets.assets import DATASET_LEVEL_ASSETS, producers_of
from dpl_assets.assets.dependencies import required_inputs
from dpl_assets.catalog import Registration
from dpl_assets.datatypes import StorageFormat, get_datatype
from dpl_assets.definitions import build_definitions
from dpl_assets.discovery import InputRoots
from dpl_assets.graph import GraphError, GraphPlan
from dpl_assets.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    VIDEOS_PARTITION_NAME,
    VIDEOS_PER_RUN,
)
from dpl_assets.registration import pending_ranges, pending_videos, sync_videos
from dpl_assets.report import VideoReport, video_report
from dpl_assets.storage.atomic import remove_dead_temps
from dpl_assets.storage.store import ArtifactStore

RUN_JOB_NAME = "dpl_run"
DATASET_JOB_NAME = "dpl_run_dataset"


@dataclass
class RunOutcome:
    reports: list[VideoReport]
    run_ids: list[str]
    new_videos: list[str]
    dataset_outputs: dict[str, str] = field(default_factory=dict)  # asset -> folder


def register_videos(
    instance: dg.DagsterInstance, store: ArtifactStore, inputs: InputRoots
) -> Registration:
    """Scan ``inputs`` (see :func:`sync_videos`) and bring the instance's partitions in line:
    every existing video is a partition, a removed file's partition is deleted."""
    registration = sync_videos(store, inputs)
    known = set(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))
    missing = [video_id for video_id in registration.all_ids if video_id not in known]
    if missing:
        instance.add_dynamic_partitions(VIDEOS_PARTITION_NAME, missing)
    for video_id in registration.removed_ids:
        if video_id in known:
            instance.delete_dynamic_partition(VIDEOS_PARTITION_NAME, video_id)
    return registration


def selected_assets(plan: GraphPlan, inputs: InputRoots) -> list[str]:
    """The graph's assets, plus the ``probe`` record whenever videos are given."""
    assets = list(plan.assets)
    if "video" in inputs.roots and "probe" not in assets:
        assets.insert(0, "probe")
    return assets


def check_inputs_available(
    plan: GraphPlan, assets: list[str], inputs: InputRoots, store: ArtifactStore
) -> None:
    """Fail before any work when a node's input is neither produced nor given."""
    for asset in assets:
        spec = plan.node_of.get(asset) or producers_of(asset)[0]
        for key in required_inputs(spec, plan.full_config.get(asset, {})):
            if get_datatype(key).storage is StorageFormat.MEDIA or key in assets:
                continue
            if key in inputs.roots or (store.output_dir / key).is_dir():
                continue
            producers = [spec.name for spec in producers_of(key)]
            raise GraphError(
                f"{asset!r} needs {key!r}: add {' or '.join(producers)} to the graph, "
                f"or give a {key!r} root in the inputs"
            )


def run_plan(
    plan: GraphPlan,
    inputs: InputRoots,
    output_dir: Path,
    instance: dg.DagsterInstance,
    *,
    chunk_size: int = VIDEOS_PER_RUN,
    retry_rejected: bool = False,
    log_level: str = "WARNING",
    progress: Callable[[str], None] = print,
) -> RunOutcome:
    """Register, materialize what is missing, and report. Raises GraphError before any work.

    Per-video assets run in partition-range runs of up to ``chunk_size`` videos; dataset-level
    assets (a dataset pack, the summary) then run once over everything.
    """
    store = ArtifactStore(output_dir)
    assets = selected_assets(plan, inputs)
    per_video = [asset for asset in assets if asset not in DATASET_LEVEL_ASSETS]
    dataset_level = [asset for asset in assets if asset in DATASET_LEVEL_ASSETS]
    jobs = [
        dg.define_asset_job(name, selection=dg.AssetSelection.assets(*selection))
        for name, selection in ((RUN_JOB_NAME, per_video), (DATASET_JOB_NAME, dataset_level))
        if selection
    ]
    defs = build_definitions(output_dir, jobs=jobs, nodes=plan.custom_nodes)
    check_inputs_available(plan, assets, inputs, store)
    store.catalog.save_graph(plan.source)  # replayed by the sensor, schedule, dpl backfill

    leftovers = remove_dead_temps(store.output_dir) + store.remove_dead_staging()
    if leftovers:
        progress(f"removed {len(leftovers)} temp or staged file(s) left by a killed run")
    registration = register_videos(instance, store, inputs)
    all_ids, new_ids = registration.all_ids, registration.new_ids
    if retry_rejected:
        for video_id in all_ids:
            store.clear_rejections(video_id)
    pending = set(pending_videos(store, all_ids, per_video, recompute=plan.recompute))
    ordered = instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME)
    ranges = pending_ranges(list(ordered), pending, chunk_size) if per_video else []
    changes = "".join(
        f", {len(ids)} {what}"
        for what, ids in (("changed", registration.changed_ids),
                          ("removed", registration.removed_ids))
        if ids
    )  # fmt: skip
    progress(
        f"{len(all_ids)} videos registered ({len(new_ids)} new{changes}); {len(pending)} to "
        f"process in {len(ranges)} run(s): {', '.join(assets)}"
    )
    run_config = {
        **plan.run_config(lambda asset: defs.get_assets_def(asset).node_def.name),
        "loggers": {"console": {"config": {"log_level": log_level}}},
    }
    run_ids = []
    position = {video_id: index for index, video_id in enumerate(ordered)}
    # A progress bar on a terminal (tqdm turns itself off when stderr is not one).
    bar = tqdm(total=len(pending), unit="video", desc="dpl run", disable=None, file=sys.stderr)
    for first, last in ranges:
        result = defs.resolve_job_def(RUN_JOB_NAME).execute_in_process(
            run_config=_ops_in(run_config, per_video, defs),
            instance=instance,
            raise_on_error=False,
            tags={
                RANGE_START_TAG: first,
                RANGE_END_TAG: last,
                "dpl/launched_by": "dpl run",
            },
        )
        run_ids.append(result.run_id)
        bar.update(
            sum(1 for vid in ordered[position[first] : position[last] + 1] if vid in pending)
        )
        bar.clear()
        progress(
            f"run {result.run_id[:8]} [{first} ... {last}]: "
            f"{'succeeded' if result.success else 'had failures'}"
        )
        bar.refresh()
    bar.close()
    # Dataset-level outputs change only when videos were processed, added, changed or
    # removed (or are missing): a rerun with nothing new starts no run at all.
    videos_moved = bool(ranges or new_ids or registration.changed_ids or registration.removed_ids)
    missing = [asset for asset in dataset_level if not (store.output_dir / asset).exists()]
    if dataset_level and (videos_moved or missing or plan.recompute):
        result = defs.resolve_job_def(DATASET_JOB_NAME).execute_in_process(
            run_config=_ops_in(run_config, dataset_level, defs),
            instance=instance,
            raise_on_error=False,
            tags={"dpl/launched_by": "dpl run"},
        )
        run_ids.append(result.run_id)
        progress(
            f"run {result.run_id[:8]} [{', '.join(dataset_level)}]: "
            f"{'succeeded' if result.success else 'had failures'}"
        )
    reports = [video_report(store, video_id, per_video) for video_id in all_ids]
    # Files refused at discovery (symbolic links out of the roots, broken, looping): never
    # registered, never run, but never silent either.
    reports += [
        VideoReport(video_id=entry.video_id, source=entry.path, status="rejected",
                    reason=entry.reason)
        for entry in registration.refused
    ]  # fmt: skip
    dataset_outputs = {
        asset: str(path) for asset in dataset_level if (path := store.output_dir / asset).exists()
    }
    return RunOutcome(
        reports=reports, run_ids=run_ids, new_videos=new_ids, dataset_outputs=dataset_outputs
    )


def _ops_in(run_config: dict, assets: list[str], defs: dg.Definitions) -> dict:
    """``run_config`` keeping only the ops of ``assets`` (a job rejects config of others)."""
    ops = {defs.get_assets_def(asset).node_def.name for asset in assets}
    return {
        **run_config,
        "ops": {op: cfg for op, cfg in run_config.get("ops", {}).items() if op in ops},
    }
