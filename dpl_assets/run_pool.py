"""``dpl run``'s partition-range runs, in process or spread over worker processes.

One process runs a node's steps one after another, and most steps use about one core
(the face model, JPEG coding, the packers), so on a multi-core machine one run leaves
cores idle. ``dpl run --workers N`` runs the ranges of pending videos in N worker
processes instead (``spawn``: no forked mediapipe or torch state), each executing its
ranges with Dagster's in-process executor on the same persistent instance, so the runs,
their events and the UI look as with one process. Every worker builds the definitions and
its models once and keeps them across its ranges, and gets ``cores // N`` threads
(:mod:`dpl_assets.threads`, through ``DPL_THREADS``). Videos are claimed per output
(:mod:`dpl_assets.assets.claims`), so two workers never compute the same video.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dpl_assets import threads


@dataclass(frozen=True)
class RangeRun:
    """One run to launch: ``job`` over ``assets`` with ``tags`` (a partition range)."""

    job: str
    assets: list[str]
    what: str  # how progress lines name it, e.g. "clip_001 ... clip_006"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunEnded:
    """How a launched run ended."""

    run: RangeRun
    run_id: str
    success: bool


def run_config_for(run_config: dict, assets: list[str], defs: dg.Definitions) -> dict:
    """``run_config`` keeping only the ops of ``assets`` (a job rejects config of others)."""
    ops = {defs.get_assets_def(asset).node_def.name for asset in assets}
    return {
        **run_config,
        "ops": {op: cfg for op, cfg in run_config.get("ops", {}).items() if op in ops},
    }


def execute(
    defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict, run: RangeRun
) -> RunEnded:
    """Execute ``run`` in this process on ``instance``; failures are in the result."""
    result = defs.resolve_job_def(run.job).execute_in_process(
        run_config=run_config_for(run_config, run.assets, defs),
        instance=instance,
        raise_on_error=False,
        tags={**run.tags, "dpl/launched_by": "dpl run"},
    )
    return RunEnded(run, result.run_id, result.success)


# -- worker processes --------------------------------------------------------------------

DefinitionsFactory = Callable[[], dg.Definitions]

_worker: dict[str, Any] = {}  # this worker process's definitions and instance


def _start_worker(
    make_defs: DefinitionsFactory, instance_ref: Any, run_config: dict, thread_budget: int
) -> None:
    """Worker initializer: its thread budget first (before torch is imported), then the
    instance and definitions it keeps for all its ranges."""
    os.environ[threads.THREADS_ENV] = str(thread_budget)
    _worker["instance"] = dg.DagsterInstance.from_ref(instance_ref)
    _worker["defs"] = make_defs()
    _worker["run_config"] = run_config


def _run_in_worker(run: RangeRun) -> RunEnded:
    return execute(_worker["defs"], _worker["instance"], _worker["run_config"], run)


def run_all(
    runs: Iterable[RangeRun],
    *,
    workers: int,
    make_defs: DefinitionsFactory,
    instance: dg.DagsterInstance,
    run_config: dict,
    on_ended: Callable[[RunEnded], None],
) -> list[RunEnded]:
    """Execute ``runs``: in this process when ``workers`` is 1 (or there is one run), else
    in up to ``workers`` spawned processes, at most one run per process at a time;
    ``on_ended`` is called in this process as each run ends, in the order they end.

    ``make_defs`` must be picklable (a module-level function or a ``functools.partial`` of
    one): each worker calls it once. A worker process that dies (killed, out of memory)
    raises ``concurrent.futures.process.BrokenProcessPool`` here; what the finished runs
    saved is kept, and the next ``dpl run`` computes the rest.
    """
    runs = list(runs)
    workers = max(1, min(workers, len(runs)))
    ended: list[RunEnded] = []
    if workers == 1:
        threads.use(threads.cores())  # alone in this process: every core
        try:
            defs = make_defs()
            for run in runs:
                ended.append(execute(defs, instance, run_config, run))
                on_ended(ended[-1])
        finally:
            threads.use(None)
        return ended
    share = max(1, threads.cores() // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(make_defs, instance.get_ref(), run_config, share),
    )
    with pool:
        pending: set[Future[RunEnded]] = {pool.submit(_run_in_worker, run) for run in runs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                ended.append(future.result())
                on_ended(ended[-1])
    return ended


WORKERS_ENV = "DPL_WORKERS"


def default_workers() -> int:
    """``dpl run``'s worker processes when ``--workers`` is not given: ``DPL_WORKERS``, else
    one per core, at most 4 (each holds its own models: about 1.2 GB with wav2vec2-base
    and the face model). ValueError when ``DPL_WORKERS`` is not a positive integer."""
    given = os.environ.get(WORKERS_ENV)
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, not {given!r}")
        return int(given)
    return min(threads.cores(), 4)


__all__ = ["RangeRun", "RunEnded", "default_workers", "execute", "run_all", "run_config_for"]
