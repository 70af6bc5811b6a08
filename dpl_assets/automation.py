"""Running unattended: the new-video sensor and the backfill schedule.

Both replay what ``dpl run`` was last given (the inputs and graph saved in the catalog; the
default graph when only ``dpl register`` was used) against ``DPL_OUTPUT_DIR``, and request
runs of up to :data:`~dpl_assets.partitions.VIDEOS_PER_RUN` videos over partition ranges.

- Sensor ``new_videos`` (every ``DPL_SENSOR_INTERVAL_S`` s, default 60): rescans the input
  roots with their filters. New files become partitions and runs (once unchanged for
  ``DPL_SENSOR_SETTLE_S`` s, default 30, so files still being copied wait); a changed file
  (size or modification time) has its outputs discarded and is run again; a removed file's
  partition is deleted (its outputs stay on disk). Each tick costs one directory walk, one
  ``stat`` per file and one partition listing; nothing is requested twice (run keys carry
  the file fingerprints, each video is in one request per tick).
- Schedule ``backfill_missing`` (cron ``DPL_BACKFILL_CRON``, default ``0 3 * * *``):
  requests every video whose selected assets are missing or failed; rejected videos are
  skipped unless ``DPL_RETRY_REJECTED=1`` (then their rejections are cleared first).

Both are off until switched on (UI: Automation; or ``dagster sensor start new_videos``).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from typing import Any

import dagster as dg

from dpl_assets.assets import DATASET_LEVEL_ASSETS, OP_OF
from dpl_assets.catalog import fingerprint
from dpl_assets.discovery import parse_inputs
from dpl_assets.graph import GraphPlan, plan_graph
from dpl_assets.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    VIDEOS_PARTITION_NAME,
    VIDEOS_PER_RUN,
    add_video_partitions_requests,
)
from dpl_assets.registration import pending_ranges, pending_videos, sync_videos
from dpl_assets.settings import output_dir_from_env
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.threads import parallel_runs

PER_VIDEO_ASSETS = dg.AssetSelection.all() - dg.AssetSelection.assets(*DATASET_LEVEL_ASSETS)


def default_graph() -> list:
    text = resources.files("dpl_assets").joinpath("configs/default.json").read_text("utf-8")
    return json.loads(text)


def saved_plan(store: ArtifactStore) -> GraphPlan:
    """The graph of the last ``dpl run`` on this output dir, else the default graph."""
    return plan_graph(store.catalog.saved_graph() or default_graph())


def per_video_assets(plan: GraphPlan) -> list[str]:
    """The plan's per-video assets, with ``probe`` (``dpl run`` adds it too)."""
    assets = [asset for asset in plan.assets if asset not in DATASET_LEVEL_ASSETS]
    return assets if "probe" in assets else ["probe", *assets]


def run_request(
    plan: GraphPlan, assets: list[str], first: str, last: str, run_key: str | None, why: str
) -> dg.RunRequest:
    """A run of ``assets`` over the partition range ``first`` .. ``last``. Raises
    ``dg.DagsterInvariantViolationError`` naming the assets this code location does not
    know (a node added to the saved graph since it loaded)."""
    unknown = [asset for asset in assets if asset not in OP_OF]
    if unknown:
        raise dg.DagsterInvariantViolationError(
            f"the saved graph computes {unknown}, which this code location does not know: "
            "reload the code location (a later `dpl run` added a custom node) or set DPL_NODES"
        )
    ops = {OP_OF[asset] for asset in assets}
    config = plan.run_config(lambda asset: OP_OF[asset])
    return dg.RunRequest(
        run_key=run_key,
        asset_selection=[dg.AssetKey(asset) for asset in assets],
        run_config={"ops": {op: c for op, c in config["ops"].items() if op in ops}},
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last, "dpl/launched_by": why},
    )


def _key(video_ids: list[str], store: ArtifactStore) -> str:
    """A run key for these videos' current files: the same files never launch twice."""
    digest = hashlib.sha256()
    for video_id in video_ids:
        source = store.catalog.entry(video_id).primary_source
        digest.update(json.dumps([video_id, fingerprint(source)]).encode())
    return digest.hexdigest()[:24]


@dg.sensor(
    name="new_videos",
    target=PER_VIDEO_ASSETS,
    minimum_interval_seconds=int(os.environ.get("DPL_SENSOR_INTERVAL_S", "60")),
    description="New, changed and removed videos in the input roots -> partitions and runs.",
)
def new_videos_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    store = ArtifactStore(output_dir_from_env())
    spec = store.catalog.saved_inputs()
    if spec is None:
        return dg.SkipReason(
            f"no inputs registered in {store.output_dir}: run `dpl register --inputs "
            "inputs.json` (or `dpl run`) once"
        )
    settle_s = float(os.environ.get("DPL_SENSOR_SETTLE_S", "30"))
    registration = sync_videos(store, parse_inputs(spec), settle_s=settle_s)
    cursor: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    instance = context.instance
    plan = saved_plan(store)
    assets = per_video_assets(plan)
    # Every tick compares the catalog with the instance (one query), so a video registered
    # by a tick that failed halfway, or by `dpl register`, is never left out.
    known = instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME)
    known_set = set(known)
    to_add = [vid for vid in registration.all_ids if vid not in known_set]
    ordered = [*known, *to_add]  # added partitions go to the end of the order
    if "registered" not in cursor:  # first tick: also every video registered, never run
        to_run = pending_videos(store, registration.all_ids, assets)
    else:
        to_run = [*to_add, *registration.changed_ids]
    requests = []
    position = {video_id: index for index, video_id in enumerate(ordered)}
    for first, last in pending_ranges(ordered, to_run, VIDEOS_PER_RUN, parallel_runs(instance)):
        batch = list(ordered[position[first] : position[last] + 1])
        key = "videos:" + _key(batch, store)
        requests.append(run_request(plan, assets, first, last, key, "new_videos"))
    partitions: list[Any] = []
    partitions.extend(add_video_partitions_requests(to_add))
    if registration.removed_ids:
        partitions.append(
            dg.DeleteDynamicPartitionsRequest(VIDEOS_PARTITION_NAME, registration.removed_ids)
        )
    cursor = {
        "registered": len(registration.all_ids),
        "added": len(to_add),
        "changed": len(registration.changed_ids),
        "removed": len(registration.removed_ids),
    }
    context.log.info(f"new_videos: {cursor}")
    return dg.SensorResult(
        run_requests=requests, dynamic_partitions_requests=partitions, cursor=json.dumps(cursor)
    )


def backfill_requests(
    store: ArtifactStore, instance: dg.DagsterInstance, retry_rejected: bool
) -> list[dg.RunRequest]:
    """Runs for every video whose per-video assets are missing or failed, in ranges."""
    plan = saved_plan(store)
    assets = per_video_assets(plan)
    video_ids = list(store.catalog.entries())
    if retry_rejected:
        for video_id in video_ids:
            store.clear_rejections(video_id)
    pending = pending_videos(store, video_ids, assets, recompute=plan.recompute)
    ordered = instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME)
    return [
        run_request(plan, assets, first, last, None, "backfill_missing")
        for first, last in pending_ranges(ordered, pending, VIDEOS_PER_RUN, parallel_runs(instance))
    ]


@dg.schedule(
    name="backfill_missing",
    target=PER_VIDEO_ASSETS,
    cron_schedule=os.environ.get("DPL_BACKFILL_CRON", "0 3 * * *"),
    description="Missing and failed videos of the last run's graph, in batches.",
)
def backfill_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    store = ArtifactStore(output_dir_from_env())
    retry = os.environ.get("DPL_RETRY_REJECTED", "") not in ("", "0", "false")
    requests = backfill_requests(store, context.instance, retry)
    return requests or dg.SkipReason("nothing missing or failed")


SENSORS = [new_videos_sensor]
SCHEDULES = [backfill_schedule]
