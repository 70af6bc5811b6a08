"""Run a seed-style graph through Dagster on a persistent local instance.

Used by ``dpl run``: register the videos as partitions, work out which (video, datatype)
pairs are not done yet, materialize them in runs of up to ``chunk_size`` videos (models load
once per process), then read every video's outcome off the store into ``report.json``.
"""

from __future__ import annotations

import functools
import sys
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from dpl_assets import interrupts, partition_stamp, threads
from dpl_assets.assets import DATASET_LEVEL_ASSETS, producers_of
from dpl_assets.assets.dependencies import required_inputs
from dpl_assets.catalog import Registration
from dpl_assets.datatypes import FRAME_REFERENCE, StorageFormat, get_datatype
from dpl_assets.definitions import build_definitions, plan_packed
from dpl_assets.discovery import InputRoots
from dpl_assets.graph import GraphError, GraphPlan, plan_graph
from dpl_assets.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    VIDEOS_PARTITION_NAME,
    VIDEOS_PER_RUN,
    add_video_partitions,
)
from dpl_assets.pending_index import pending_videos_cached
from dpl_assets.registration import pending_ranges, run_length, sync_videos
from dpl_assets.report import VideoReport
from dpl_assets.report_cache import ReportCache
from dpl_assets.run_pool import (
    LAUNCHED_BY_TAG,
    SESSION_TAG,
    RangeRun,
    RunEnded,
    WorkerDied,
    execute,
    fail_abandoned_runs,
    fail_runs_of_ended_processes,
    run_all,
    run_config_for,
)
from dpl_assets.storage import frame_cache
from dpl_assets.storage.store import ArtifactStore
from dpl_assets.temp_sweep import sweep_dead_temps
from dpl_assets.worker_pool import WorkerPool, start_pool

RUN_JOB_NAME = "dpl_run"
DATASET_JOB_NAME = "dpl_run_dataset"


@dataclass
class RunOutcome:
    report: ReportCache  # every video's entry, up to date: write it, count it
    run_ids: list[str]
    new_videos: list[str]
    dataset_outputs: dict[str, str] = field(default_factory=dict)  # asset -> folder

    @property
    def reports(self) -> list[VideoReport]:
        """Every entry of the report in full (loads them all: for small collections)."""
        return self.report.reports()


def register_videos(
    instance: dg.DagsterInstance, store: ArtifactStore, inputs: InputRoots
) -> Registration:
    """Scan ``inputs`` (see :func:`sync_videos`) and bring the instance's partitions in line:
    every existing video is a partition, a removed file's partition is deleted."""
    return _register(instance, store, inputs)[0]


def _register(
    instance: dg.DagsterInstance, store: ArtifactStore, inputs: InputRoots, lazy: bool = False
) -> tuple[Registration, list[str] | None]:
    """:func:`register_videos`, and the instance's video partitions after it, in order
    (listed once: a million keys take seconds). ``lazy``: None instead of the partitions
    when they are known to be the registered videos already (nothing new or removed, and
    :mod:`dpl_assets.partition_stamp`'s record says so): :func:`_partitions` lists them
    if they are needed after all."""
    registration = sync_videos(store, inputs)
    summary = partition_stamp.partitions_summary(instance)  # before the listing
    steady = not (registration.new_ids or registration.removed_ids)
    if lazy and steady and partition_stamp.in_step(store.output_dir, registration.all_ids, summary):
        return registration, None
    ordered = _partitions(instance)
    known = set(ordered)
    missing = [video_id for video_id in registration.all_ids if video_id not in known]
    deleted = {video_id for video_id in registration.removed_ids if video_id in known}
    if missing or deleted:
        partition_stamp.forget(store.output_dir)
    add_video_partitions(instance, missing)
    for video_id in deleted:
        instance.delete_dynamic_partition(VIDEOS_PARTITION_NAME, video_id)
    if not (missing or deleted):  # checked: the summary taken before stands for these ids
        partition_stamp.keep(store.output_dir, registration.all_ids, summary)
    # partitions are listed in the order they were added
    return registration, [key for key in ordered if key not in deleted] + missing


def _partitions(instance: dg.DagsterInstance) -> list[str]:
    """The instance's video partitions, in the order they were added."""
    return list(instance.get_dynamic_partitions(VIDEOS_PARTITION_NAME))


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


def run_definitions(
    output_dir: Path,
    graph: list,
    assets: list[str],
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """The definitions ``dpl run`` executes: everything, plus its two jobs over the graph's
    ``assets`` (per-video and dataset-level), on ``executor`` (default: the code location's).
    Module level, so a worker process rebuilds them from the graph JSON."""
    plan = plan_graph(graph)
    jobs = [
        dg.define_asset_job(
            name, selection=dg.AssetSelection.assets(*selection), executor_def=executor
        )
        for name, selection in (
            (RUN_JOB_NAME, [asset for asset in assets if asset not in DATASET_LEVEL_ASSETS]),
            (DATASET_JOB_NAME, [asset for asset in assets if asset in DATASET_LEVEL_ASSETS]),
        )
        if selection
    ]
    return build_definitions(
        output_dir, jobs=jobs, nodes=plan.custom_nodes, packed=plan_packed(plan)
    )


def run_plan(
    plan: GraphPlan,
    inputs: InputRoots,
    output_dir: Path,
    instance: dg.DagsterInstance,
    *,
    chunk_size: int = VIDEOS_PER_RUN,
    workers: int = 1,
    retry_rejected: bool = False,
    log_level: str = "WARNING",
    progress: Callable[[str], None] = print,
    celery: bool = False,
    pool: WorkerPool | None = None,
) -> RunOutcome:
    """Register, materialize what is missing, and report. Raises GraphError before any work.

    Per-video assets run in partition-range runs of up to ``chunk_size`` videos, spread
    over ``workers`` processes (:mod:`dpl_assets.run_pool`; ranges are then at most an even
    share of the pending videos, so every worker gets some); dataset-level assets (a
    dataset pack, the summary) then run once over everything, in this process.

    ``celery``: every run's steps go to Celery workers instead (:func:`execute_on_celery`),
    one run at a time (the workers run a run's independent steps in parallel); ``workers``
    then only sizes the ranges.

    ``pool``: worker processes the caller started earlier (:func:`start_worker_pool`, so
    they start up while it opens the instance); None starts them here when needed. Either
    way the pool is closed on return.
    """
    interrupts.clear()  # an earlier dpl run in this process (a test, a notebook) was stopped
    store = ArtifactStore(output_dir)
    assets = selected_assets(plan, inputs)
    per_video = [asset for asset in assets if asset not in DATASET_LEVEL_ASSETS]
    dataset_level = [asset for asset in assets if asset in DATASET_LEVEL_ASSETS]
    make_defs = functools.partial(run_definitions, output_dir, plan.source, assets)
    if pool is None and per_video and not celery:
        # Started before anything else, so their start-up overlaps all that follows.
        pool = start_worker_pool(plan, workers)
    try:
        if pool is not None:
            pool.prepare(make_defs, instance)
        defs = make_defs()
        check_inputs_available(plan, assets, inputs, store)
        store.catalog.save_graph(plan.source)  # replayed by the sensor, schedule, dpl backfill
        leftovers = sweep_dead_temps(store.output_dir) + store.remove_dead_staging()
        if leftovers:
            progress(f"removed {len(leftovers)} temp or staged file(s) left by a killed run")
        if stale := fail_runs_of_ended_processes(instance):
            progress(f"marked {len(stale)} run(s) of a killed dpl run failed (their process "
                     f"is gone): {', '.join(run_id[:8] for run_id in stale)}")  # fmt: skip
        registration, listed = _register(instance, store, inputs, lazy=True)
        if retry_rejected:
            for video_id in registration.all_ids:
                store.clear_rejections(video_id)
        pending = set(
            pending_videos_cached(store, registration.all_ids, per_video, recompute=plan.recompute)
        )
        # the partitions' order is needed only to cut the pending videos into ranges
        ordered = listed if listed is not None else _partitions(instance) if pending else []
        fit = frames_fit(plan, per_video, store, ordered, pending, celery)
        ranges = (
            pending_ranges(ordered, pending, min(chunk_size, fit), workers) if per_video else []
        )
        fitted = run_length(len(pending), min(chunk_size, fit), workers) < run_length(
            len(pending), chunk_size, workers
        )
        progress(_plan_line(registration, pending, ranges, assets, workers)
                 + (f"; at most {fit} {'video' if fit == 1 else 'videos'} a run, so their "
                    f"decoded frames fit {frame_cache.CACHE_MB_ENV}" if fitted else "")
                 + ("; steps on Celery workers" if celery else ""))  # fmt: skip
        run_config = {
            **plan.run_config(lambda asset: defs.get_assets_def(asset).node_def.name),
            "loggers": {"console": {"config": {"log_level": log_level}}},
        }
        runs = [
            RangeRun(RUN_JOB_NAME, per_video, f"{first} ... {last}",
                     {RANGE_START_TAG: first, RANGE_END_TAG: last})
            for first, last in ranges
        ]  # fmt: skip
        # Dataset-level outputs change only when videos were processed, added, changed or
        # removed (or are missing): a rerun with nothing new starts no run at all.
        videos_moved = bool(
            ranges or registration.new_ids or registration.changed_ids or registration.removed_ids
        )
        missing = [asset for asset in dataset_level if not (store.output_dir / asset).exists()]
        if dataset_level and (videos_moved or missing or plan.recompute):
            dataset_run = RangeRun(DATASET_JOB_NAME, dataset_level, ", ".join(dataset_level))
        else:
            dataset_run = None
        on_celery = (
            functools.partial(execute_on_celery, instance, defs, output_dir, plan.source, assets,
                              run_config)
            if celery
            else None
        )  # fmt: skip
        ended = _launch(runs, dataset_run, ordered, pending, pool, defs, instance, run_config,
                        progress, on_celery, model_libraries(plan))  # fmt: skip
    finally:
        if pool is not None:
            pool.close()
    return RunOutcome(
        report=_report(store, registration, per_video, pending),
        run_ids=[run.run_id for run in ended],
        new_videos=registration.new_ids,
        dataset_outputs={
            asset: str(path)
            for asset in dataset_level
            if (path := store.output_dir / asset).exists()
        },
    )


def start_worker_pool(
    plan: GraphPlan, workers: int, started: WorkerPool | None = None
) -> WorkerPool | None:
    """``workers - 1`` worker processes for :func:`run_plan` (None for 1): ``started`` (a
    pool started before the graph was read, :func:`dpl_assets.worker_pool.start_pool`)
    when it has that many and is not configured otherwise, else a new one (``started`` is
    then closed); configured with each worker's thread budget and the graph's model
    libraries (:attr:`~dpl_assets.specs.NodeSpec.preload`), which they import as they
    start. Calling it again with the pool it returned and the same count returns that pool."""
    configuration = (max(1, threads.cores() // workers), model_libraries(plan))
    if started is not None and (
        started.count != workers - 1 or started.configuration not in (None, configuration)
    ):
        started.close()
        started = None
    pool = started or start_pool(workers)
    if pool is not None and not pool.configured:
        pool.configure(*configuration)
    return pool


def model_libraries(plan: GraphPlan) -> tuple[str, ...]:
    """The modules the graph's models need (:attr:`~dpl_assets.specs.NodeSpec.preload`),
    each once, in the graph's order: what every process of ``dpl run`` imports before its
    first run."""
    return tuple(dict.fromkeys(module for spec in plan.node_of.values() for module in spec.preload))


def _launch(
    runs: list[RangeRun],
    dataset_run: RangeRun | None,
    ordered: list[str],
    pending: set[str],
    pool: WorkerPool | None,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: dict,
    progress: Callable[[str], None],
    on_celery: Callable[[RangeRun], RunEnded] | None = None,
    preload: tuple[str, ...] = (),
) -> list[RunEnded]:
    """The per-video runs (here and in ``pool``'s workers, or one after another through
    ``on_celery``), then the dataset-level run (here, or through ``on_celery``), with a
    progress bar of the pending videos and one line per run. ``preload``: the modules
    the runs' models need (:func:`model_libraries`), imported here first."""
    position = {video_id: index for index, video_id in enumerate(ordered)}
    bar = tqdm(total=len(pending), unit="video", desc="dpl run", disable=None, file=sys.stderr)

    def ended(run: RunEnded) -> None:
        bar.clear()
        progress(f"run {run.run_id[:8]} [{run.run.what}]: "
                 f"{'succeeded' if run.success else 'had failures'}")  # fmt: skip
        if RANGE_START_TAG in run.run.tags:
            first, last = run.run.tags[RANGE_START_TAG], run.run.tags[RANGE_END_TAG]
            span = ordered[position[first] : position[last] + 1]
            bar.update(sum(1 for video_id in span if video_id in pending))
            bar.refresh()

    session = uuid.uuid4().hex
    runs = [replace(run, tags={**run.tags, SESSION_TAG: session}) for run in runs]
    results: list[RunEnded] = []
    try:
        if on_celery is not None:
            for run in [*runs, *([dataset_run] if dataset_run is not None else [])]:
                results.append(on_celery(run))
                ended(results[-1])
            return results
        try:
            results = run_all(runs, defs=defs, instance=instance, run_config=run_config,
                              on_ended=ended, pool=pool, preload=preload)  # fmt: skip
        except WorkerDied as error:
            results = error.ended
            abandoned = ", ".join(run_id[:8] for run_id in fail_abandoned_runs(instance, session))
            progress(
                f"a worker process failed ({error}; killed, out of memory, or its start-up "
                "failed: see any traceback above)"
                + (f": run(s) {abandoned} marked failed" if abandoned else "")
                + "; the videos it did not finish are reported failed; run again to compute "
                "them (not retried here: a video that kills a worker could kill this process)"
            )
        if dataset_run is not None and not interrupts.requested():
            results.append(execute(defs, instance, run_config, dataset_run))
            ended(results[-1])
    finally:
        bar.close()
    return results


def execute_on_celery(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    output_dir: Path,
    graph: list,
    assets: list[str],
    run_config: dict,
    run: RangeRun,
) -> RunEnded:
    """Execute ``run`` with its steps on Celery workers (:mod:`dpl_assets.cluster`): this
    process orchestrates, the workers rebuild the job from the output dir and ``graph``.
    The instance must be one the workers reach (Postgres, or SQLite in a folder they share).
    Failures are in the result; raises :class:`~dpl_assets.cluster.CeleryUnavailable`
    without the ``celery`` extra or the broker variables."""
    from dpl_assets.cluster import broker_urls, reconstructable_run_job

    broker_urls()  # a missing variable is named before any run starts
    job = reconstructable_run_job(output_dir, graph, assets, run.job)
    with warnings.catch_warnings():
        # dagster-celery registers its task again for every step it submits; Celery warns
        # each time (DuplicateTaskNameWarning) that the first registration is kept.
        warnings.filterwarnings("ignore", message="Task name 'execute_plan' is already")
        with dg.execute_job(
            job,
            instance,
            run_config=run_config_for(run_config, run.assets, defs),
            tags={**run.tags, LAUNCHED_BY_TAG: "dpl run (celery)"},
        ) as result:
            return RunEnded(run, result.run_id, result.success)


def frames_fit(
    plan: GraphPlan,
    per_video: list[str],
    store: ArtifactStore,
    ordered: list[str],
    pending: set[str],
    celery: bool = False,
) -> int:
    """The most videos a run may hold so that all the frames its ``images`` step keeps
    for the steps after it (:mod:`dpl_assets.storage.frame_cache`) fit the per-process
    budget: a run's later steps read every video's frames only after the step before
    has done all its videos, so frames of a run too large for the budget are decoded again
    for most of its videos (measured: 36 clips of 8 s 640x480 in 2 runs kept 11 of 18 a
    run). From the header of the first pending video (``frame_cache.estimated_bytes``:
    duration x rate x fitted size), as the videos of a dataset are mostly alike. No limit
    (a very large number) when nothing is kept: no ``images`` step or no step reading it,
    steps elsewhere than the run's process, keeping off, or a video that alone does not
    fit (it is then not kept at all)."""
    from dpl_assets.assets.dependencies import declared_inputs
    from dpl_assets.assets.video_step import steps_share_the_run_process
    from dpl_assets.media.frames import DecodeRecipe

    unlimited = sys.maxsize
    readers = [
        asset
        for asset in per_video
        if asset != FRAME_REFERENCE
        and (spec := plan.node_of.get(asset)) is not None
        and FRAME_REFERENCE in declared_inputs(spec, plan.full_config.get(asset, {}))
    ]
    if FRAME_REFERENCE not in per_video or not readers or celery:
        return unlimited
    if not steps_share_the_run_process(plan.run_config()):
        return unlimited
    try:
        budget = frame_cache.budget_from_env()
    except ValueError:  # dpl run refused it already; elsewhere keeping is off
        return unlimited
    first = next((video_id for video_id in ordered if video_id in pending), None)
    if not budget or first is None:
        return unlimited
    images = plan.full_config.get(FRAME_REFERENCE, {})
    recipe = DecodeRecipe(fps=images.get("fps"), max_side=int(images.get("max_side") or 0))
    try:
        source = Path(store.catalog.entry(first).primary_source)
    except KeyError:
        return unlimited
    each = frame_cache.estimated_bytes(source, recipe)
    if not each or each > budget:
        return unlimited
    return max(1, budget // each)


def _plan_line(
    registration: Registration, pending: set[str], ranges: list, assets: list[str], workers: int
) -> str:
    """What the run will do, in one line: videos registered (new, changed, removed), how
    many to process in how many runs, and which assets."""
    changes = "".join(
        f", {len(ids)} {what}"
        for what, ids in (("changed", registration.changed_ids),
                          ("removed", registration.removed_ids))
        if ids
    )  # fmt: skip
    count = len(registration.all_ids)
    parallel = min(workers, len(ranges))
    in_workers = f" in {parallel} processes" if parallel > 1 else ""
    return (
        f"{count} {'video' if count == 1 else 'videos'} registered "
        f"({len(registration.new_ids)} new{changes}); {len(pending)} to process in "
        f"{len(ranges)} run(s){in_workers}: {', '.join(assets)}"
    )


def _report(
    store: ArtifactStore, registration: Registration, per_video: list[str], ran: set[str]
) -> ReportCache:
    """The report's entries brought up to date: each registered video's (recomputed for
    those that ran, are new, changed or came back, and those whose files changed, see
    :mod:`dpl_assets.report_cache`), then one for each file refused at discovery."""
    cache = ReportCache(store, per_video)
    moved = (*ran, *registration.new_ids, *registration.changed_ids, *registration.restored_ids)
    cache.update(registration.all_ids, dirty=moved)
    return cache
