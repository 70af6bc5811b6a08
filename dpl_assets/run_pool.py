"""``dpl run``'s partition-range runs, in process or spread over worker processes.

One process runs a node's steps one after another, and most steps use about one core
(the face model, JPEG coding, the packers), so on a multi-core machine one run leaves
cores idle. ``dpl run --workers N`` runs the ranges of pending videos in N processes
instead: the ``dpl`` process itself and N - 1 spawned workers (``spawn``: no forked
mediapipe or torch state), each taking the next range when it is free and executing it
with Dagster's in-process executor on the same persistent instance, so the runs, their
events and the UI look as with one process. Every process builds the definitions and its
models once and keeps them across its ranges, and gets ``cores // N`` threads
(:mod:`dpl_assets.threads`; workers through ``DPL_THREADS``). Videos are claimed per output
(:mod:`dpl_assets.assets.claims`), so two workers never compute the same video.

The workers start first (:class:`~dpl_assets.worker_pool.WorkerPool`), before the ``dpl``
process imports Dagster, reads the graph, opens the instance and registers the videos:
their start-up (Dagster, the libraries of the graph's models, several seconds) overlaps
that instead of following it; each builds the definitions on its first run; when nothing
turns out to be pending they are stopped unused. They end without the interpreter's
teardown (:mod:`dpl_assets.fast_exit`).

When the ``dpl`` process is killed, each worker marks the run it holds failed and ends
within a second (:func:`dpl_assets.processes.exit_with_parent`); the runs the ``dpl``
process held itself are marked failed by the next ``dpl run``
(:func:`fail_runs_of_ended_processes`).
"""

from __future__ import annotations

import collections
import logging
import signal
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import dagster as dg

from dpl_assets import collector, interrupts, processes, threads
from dpl_assets.storage import frame_cache
from dpl_assets.worker_pool import WorkerPool, WorkerSetup, configure_worker, worker_state

LAUNCHED_BY_TAG = "dpl/launched_by"
SESSION_TAG = "dpl/session"
PROCESS_TAG = "dpl/process"
"""Run tags: who launched the run, which ``dpl run`` (one id per invocation), and the
process that executes it (:func:`~dpl_assets.processes.host_process_tag`)."""


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
    """Execute ``run`` in this process on ``instance``; failures are in the result. The
    run is tagged with this process (:data:`PROCESS_TAG`), so a run left "started" by a
    process that was killed can be told from one still going
    (:func:`fail_runs_of_ended_processes`)."""
    me = processes.host_process_tag()
    run_id = str(uuid.uuid4())  # as Dagster makes them; known here if the run is interrupted
    try:
        with interrupts.sigterm_kept():  # Dagster leaves SIGTERM as SIGINT is (see there)
            result = defs.resolve_job_def(run.job).execute_in_process(
                run_config=run_config_for(run_config, run.assets, defs),
                instance=instance,
                raise_on_error=False,
                tags={**run.tags, LAUNCHED_BY_TAG: "dpl run", **({PROCESS_TAG: me} if me else {})},
                run_id=run_id,
            )
    except interrupts.INTERRUPTS:  # met outside a per-video step (Dagster marked it failed)
        interrupts.request(run_id)
        return RunEnded(run, run_id, False)
    finally:
        frame_cache.clear()  # kept for this run's later steps only
    if not result.success and interrupts.interrupted(result.all_events):
        interrupts.request(run_id)  # met between steps: Dagster failed the run and returned
    return RunEnded(run, result.run_id, result.success)


# -- worker processes (started by dpl_assets.worker_pool) ----------------------------------


def last_words() -> None:
    """A worker whose parent is gone, before it ends: its kept frames removed (tmpfs
    memory, not freed with the process) and the run it is executing marked failed."""
    frame_cache.discard()
    instance, me = worker_state.get("instance"), processes.host_process_tag()
    if instance is not None and me is not None:
        for run in _started_runs(instance, {PROCESS_TAG: me}):
            instance.report_run_failed(
                run, message="the dpl run that started this worker process was killed; "
                "the worker stopped too (run dpl run again to compute what is missing)"
            )  # fmt: skip


class RunNotStarted(Exception):
    """A run a worker was given but did not start: ``dpl`` was interrupted before."""


def _run_in_worker(setup: WorkerSetup, run: RangeRun, run_config: dict) -> RunEnded:
    configure_worker(*setup.configuration)  # done already unless another worker took its task
    if interrupts.every_run_stopped():  # dpl was interrupted before this run
        raise RunNotStarted(run.what)
    interrupts.clear()  # an interrupt stopped its last run, not this one
    if worker_state.get("key") != setup.key:  # the first run of this setup: build it, keep it
        worker_state["instance"] = dg.DagsterInstance.from_ref(setup.instance_ref)
        worker_state["defs"] = setup.make_defs()
        worker_state["key"] = setup.key
    try:
        return execute(worker_state["defs"], worker_state["instance"], run_config, run)
    finally:
        # execute gives SIGTERM back what it had before the run; a worker must end on it
        # (the pool's terminate, a kill) even if it started with SIGTERM ignored.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _wait_for_pool(queue: _RunQueue, pool: WorkerPool | None) -> None:
    """Wait for the pool's runs; once this process was interrupted (Ctrl-C here, or met
    in one of its runs), pass it on to the workers (their runs stop too) first."""
    try:
        if interrupts.requested() and pool is not None:
            pool.interrupt()
        queue.wait_for_pool()
    except KeyboardInterrupt:  # Ctrl-C while only the workers had runs
        interrupts.request()
        if pool is not None:
            pool.interrupt()
        queue.wait_for_pool()


class WorkerDied(RuntimeError):
    """A spawned worker process failed outside a run's own error handling: killed or out
    of memory (``BrokenProcessPool``: the pool then stops all its workers, so every run in
    flight there is abandoned), or its definitions did not build. ``cause``: the first
    such error; ``ended``: the runs that did end."""

    def __init__(self, cause: BaseException, ended: list[RunEnded]):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause, self.ended = cause, ended


def run_all(
    runs: Iterable[RangeRun],
    *,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: dict,
    on_ended: Callable[[RunEnded], None],
    pool: WorkerPool | None = None,
    preload: Iterable[str] = (),
) -> list[RunEnded]:
    """Execute ``runs`` in this process (with ``defs``) and in ``pool``'s workers, each
    taking the next run when it is free; ``on_ended`` is called as each run ends (from a
    pool thread for spawned runs, one call at a time). Returns the runs in the order they
    ended. The caller closes ``pool``. ``preload``: the modules the runs' models need,
    imported here first as the workers do (:func:`_preload`).

    A worker process that dies (killed, out of memory) stops taking runs and this process
    takes the rest; :class:`WorkerDied` is raised once every other run has ended. What
    finished runs saved is kept either way.
    """
    queue = _RunQueue(runs, on_ended, run_config)
    helpers = max(0, min(pool.count, len(queue.todo) - 1)) if pool is not None else 0
    if pool is not None and helpers > 0 and pool.setup is None:
        raise ValueError("WorkerPool.prepare was not called before run_all")
    share = max(1, threads.cores() // (1 + helpers))
    if pool is not None and helpers > 0:
        pool.used = True
        for _ in range(helpers):
            queue.feed(pool)
    threads.use(share)
    try:
        if queue.todo:  # runs left for this process (the pool has its first ones already)
            _preload(share, preload)
        while True:
            while (run := queue.take()) is not None:
                queue.ended(execute(defs, instance, run_config, run))
            _wait_for_pool(queue, pool)
            # Runs left now are a dead worker's, ours to do; none is started once interrupted.
            if not queue.todo or interrupts.requested():
                break
    finally:
        threads.use(None)
        threads.apply(threads.budget())  # later work in this process (dataset runs): all cores
    if queue.errors:
        raise WorkerDied(queue.errors[0], queue.done)
    return queue.done


def _preload(thread_budget: int, modules: Iterable[str]) -> None:
    """This process's thread budget, then ``modules`` (the graph's model libraries), as a
    worker does before its first run (:func:`~dpl_assets.worker_pool.configure_worker`):
    imported with the garbage collector paused and then frozen (:mod:`dpl_assets.collector`:
    no run lives here yet), not inside the first step that needs them. A module that does
    not import is left to that step (the error is then the step's, as without preloading);
    Ctrl-C meanwhile requests the interrupt (:mod:`dpl_assets.interrupts`): this process
    starts no run, the workers are told and stop theirs."""
    names = tuple(modules)
    threads.apply(thread_budget)  # OpenMP's pool size is read when torch loads
    try:
        collector.import_modules(names, freeze=True)
    except KeyboardInterrupt:
        interrupts.request()
    except Exception as error:  # the step importing it reports it
        logging.getLogger(__name__).debug("preloading %s failed: %s", names, error)


class _RunQueue:
    """The runs not started yet, taken one at a time by this process and by pool workers
    (each pool run, when it ends, feeds its worker the next); what ended, and errors."""

    def __init__(
        self, runs: Iterable[RangeRun], on_ended: Callable[[RunEnded], None], run_config: dict
    ):
        self.todo = collections.deque(runs)
        self.run_config = run_config
        self.done: list[RunEnded] = []
        self.errors: list[BaseException] = []
        self._on_ended = on_ended
        self._lock = threading.Condition()
        self._in_pool = 0

    def take(self) -> RangeRun | None:
        """The next run to start; None when none is left or this process was interrupted."""
        with self._lock:
            return self.todo.popleft() if self.todo and not interrupts.requested() else None

    def ended(self, run: RunEnded) -> None:
        with self._lock:
            self.done.append(run)
            self._on_ended(run)

    def feed(self, pool: WorkerPool) -> None:
        """Start the next run on a free pool worker, if any is left (a pool that cannot
        take it any more leaves it to this process)."""
        run = self.take()
        if run is None:
            return
        assert pool.setup is not None  # run_all checked
        try:
            future = pool.executor.submit(_run_in_worker, pool.setup, run, self.run_config)
        except (BrokenProcessPool, RuntimeError) as error:
            with self._lock:
                self.todo.appendleft(run)
                self.errors.append(error)
            return
        with self._lock:
            self._in_pool += 1
        future.add_done_callback(lambda done: self._pool_run_ended(done, run, pool))

    def _pool_run_ended(self, future: Future[RunEnded], run: RangeRun, pool: WorkerPool) -> None:
        try:
            self.ended(future.result())
            self.feed(pool)  # before this run stops counting: the pool is never seen idle
        except RunNotStarted:  # back in the queue, which gives it to no one once interrupted
            with self._lock:
                self.todo.appendleft(run)
        except BrokenProcessPool as error:
            # A worker died; the pool stops every worker it has, so runs in flight end
            # here too. Their runs were abandoned: the next dpl run computes their videos.
            with self._lock:
                self.errors.append(error)
        except BaseException as error:  # any other error: keep it, go on
            logging.getLogger(__name__).error("run %s failed in a worker", run.what, exc_info=error)
            with self._lock:
                self.errors.append(error)
            self.feed(pool)
        finally:
            with self._lock:
                self._in_pool -= 1
                self._lock.notify_all()

    def wait_for_pool(self) -> None:
        """Until no run is in the pool; in short slices, so that a Ctrl-C the kernel gave
        another thread reaches this one (the main thread runs signal handlers)."""
        with self._lock:
            while not self._lock.wait_for(
                lambda: self._in_pool == 0, timeout=interrupts.SIGNAL_POLL_S
            ):
                pass


def fail_abandoned_runs(instance: dg.DagsterInstance, session: str) -> list[str]:
    """Mark failed the runs of ``dpl run`` invocation ``session`` (its :data:`SESSION_TAG`)
    still "started" once it is over: their process died mid-run, and a run left started
    would hold one of the instance's ``max_concurrent_runs`` places. Returns their ids."""
    started = _started_runs(instance, {SESSION_TAG: session})
    for run in started:
        instance.report_run_failed(run)
    return [run.run_id for run in started]


def fail_runs_of_ended_processes(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs ``dpl run`` started that are still "started" though the process
    executing them (:data:`PROCESS_TAG`, this machine's) has ended: a ``dpl run`` killed
    (SIGKILL, out of memory) leaves its own runs so, and they would show as running in the
    UI for good and hold places of the instance's ``max_concurrent_runs``. What they saved
    is kept (the next run computes the rest). Returns their ids."""
    ended = [
        run
        for run in _started_runs(instance, {LAUNCHED_BY_TAG: "dpl run"})
        if PROCESS_TAG in run.tags and processes.is_gone(run.tags[PROCESS_TAG])
    ]
    for run in ended:
        instance.report_run_failed(
            run, message=f"the process that executed this run ({run.tags[PROCESS_TAG]}) "
            "ended before the run did (killed?): marked failed by a later dpl run"
        )  # fmt: skip
    return [run.run_id for run in ended]


def _started_runs(instance: dg.DagsterInstance, tags: dict[str, str]) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(filters=dg.RunsFilter(tags=tags, statuses=[dg.DagsterRunStatus.STARTED]))
    )


WORKERS_ENV = "DPL_WORKERS"


__all__ = [
    "RangeRun",
    "RunEnded",
    "WorkerDied",
    "execute",
    "fail_abandoned_runs",
    "run_all",
    "run_config_for",
]
