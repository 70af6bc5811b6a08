"""``dpl run``'s spawned worker processes (:class:`WorkerPool`), light to import.

``dpl run`` starts its workers first, before it imports Dagster and the nodes (~1.4 s of
its own start-up) and reads the graph: each worker imports Dagster and the project while
the ``dpl`` process does the same. Once the graph is read, :meth:`WorkerPool.configure`
sends each worker a task with its thread budget and the graph's model libraries, which it
imports (torch, mediapipe: several seconds) while the ``dpl`` process opens
the instance and registers the videos; a run applies the same first, in a worker that
did not get that task. Runs reach the workers from :mod:`dpl_assets.run_pool`, which
executes them. No worker ever waits for the ``dpl`` process: one that was never given
work ends with the pool. This module imports neither Dagster nor the nodes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from dpl_assets import collector, fast_exit, processes, threads

WORKERS_ENV = "DPL_WORKERS"

INTERRUPT_SIGNAL = signal.SIGUSR1
"""How the ``dpl`` process passes an interrupt on to its workers: not SIGINT, which a
worker that had the terminal's Ctrl-C already would take as a second one (and stop
waiting for the videos being computed)."""

WORKER_MODULES = ("dpl_assets.run_pool", "dpl_assets.definitions")
"""What every worker imports as it starts (Dagster, the nodes; not torch: see threads)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to execute runs: the definitions (built by ``make_defs``, a
    picklable callable returning ``dagster.Definitions``) and the instance
    (``instance_ref``, a ``dagster.InstanceRef``); its thread budget and the modules to
    import first (``configuration``, see :meth:`WorkerPool.configure`). ``key`` names one
    setup (a worker builds each once)."""

    key: str
    make_defs: Callable[[], Any]
    instance_ref: Any
    configuration: tuple[int, tuple[str, ...]]


worker_state: dict[str, Any] = {}
"""This worker process's setup key, definitions and instance (:mod:`dpl_assets.run_pool`)."""


def _start_worker(parent: int, stopped: Any) -> None:
    """Worker initializer: crash, signal and parent-death handling first, then Dagster and
    the project (:data:`WORKER_MODULES`). ``stopped``: the pool's event set when ``dpl``
    is interrupted (:meth:`WorkerPool.interrupt`): no run or step starts after it. A worker exits
    without the interpreter's teardown (:mod:`dpl_assets.fast_exit`): what it made is
    saved by then."""
    fast_exit.set_status(0)  # its status when it ends normally (killed: no exit handlers)
    processes.show_native_crashes()  # a crash in native code shows where, as in dpl
    # Ctrl-C reaches the workers too: idle, they go on (their runs catch it: interrupts).
    # dpl's interrupt is ignored until Dagster is imported (a starting worker has no run).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(INTERRUPT_SIGNAL, signal.SIG_IGN)
    processes.exit_with_parent(parent, _last_words)  # dpl killed: stop, not go on unseen
    collector.import_modules(WORKER_MODULES, freeze=True)  # nothing else lives here yet
    from dpl_assets import interrupts  # imported by WORKER_MODULES

    interrupts.stop_every_run_on(stopped)  # a signal ignored meanwhile is not lost
    signal.signal(INTERRUPT_SIGNAL, _interrupt_from_dpl)


def configure_worker(thread_budget: int, preload: tuple[str, ...]) -> int:
    """In a worker (a task of :meth:`WorkerPool.configure`, and first in each run): its
    thread budget (before torch is imported), then the ``preload`` modules; once per
    process (later calls return at once). Returns the worker's pid."""
    if worker_state.get("configuration") is None:
        worker_state["configuration"] = (thread_budget, preload)
        os.environ[threads.THREADS_ENV] = str(thread_budget)
        threads.apply(thread_budget)  # OpenMP's pool size is read when torch loads
        collector.import_modules(preload, freeze=True)  # before the worker's first run
    return os.getpid()


def _interrupt_from_dpl(signum: int, frame: Any) -> None:
    """A worker's :data:`INTERRUPT_SIGNAL` handler: the interrupt, unless it had it."""
    from dpl_assets import interrupts  # imported by then (WORKER_MODULES)

    if not interrupts.requested():
        signal.raise_signal(signal.SIGINT)  # ignored when idle; a run's handler otherwise


def _last_words() -> None:
    """A worker whose parent is gone, before it ends: see ``run_pool.last_words``."""
    from dpl_assets import run_pool

    run_pool.last_words()


@contextlib.contextmanager
def _started_ignoring(signum: int) -> Iterator[None]:
    """Processes started inside this block start with ``signum`` ignored (an ignored
    signal stays ignored across exec), until their initializer handles it; this process
    ignores it meanwhile (it only sends it). Where signals cannot be changed (not the
    main thread), nothing is changed."""
    try:
        previous = signal.signal(signum, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signum, previous)


def _started() -> int:
    """A no-op task: submitting one per worker makes the pool start them all at once."""
    return os.getpid()


class WorkerPool:
    """``count`` spawned worker processes (``spawn``: no forked mediapipe or torch state),
    started at once; :meth:`configure` then gives each its thread budget and the modules
    to preload (the graph's model libraries), and :meth:`prepare` which definitions and
    instance their runs use (each worker builds them on its first run).

    :meth:`close` when done (more than once is fine): it waits for the workers to finish,
    or stops them if no run was given to them (by the PIDs this pool started, nothing else).
    """

    def __init__(self, count: int):
        self.count = count
        self.configuration: tuple[int, tuple[str, ...]] | None = None
        self.used = False
        self.setup: WorkerSetup | None = None
        self._closed = False
        context = multiprocessing.get_context("spawn")
        # Set on an interrupt: a worker still starting, or between runs, when the signal
        # came (it has no run to stop then) starts no run or step after it (run_pool,
        # interrupts.stop_every_run_on).
        self.stopped = context.Event()
        self.executor = ProcessPoolExecutor(
            max_workers=count,
            mp_context=context,
            initializer=_start_worker,
            initargs=(os.getpid(), self.stopped),
        )
        before = {child.pid for child in multiprocessing.active_children()}

        def spawned() -> list[Any]:
            return [child for child in multiprocessing.active_children() if child.pid not in before]

        try:
            # The pool starts a process per task submitted while none is idle: all now.
            with _started_ignoring(INTERRUPT_SIGNAL):  # its default action ends a process
                self.started: list[Future[int]] = [
                    self.executor.submit(_started) for _ in range(count)
                ]
        except BaseException:  # a failed fork, Ctrl-C: the ones started are stopped
            self._processes = spawned()
            self.close()
            raise
        self._processes = spawned()

    @property
    def configured(self) -> bool:
        return self.configuration is not None

    def configure(self, thread_budget: int, preload: Iterable[str] = ()) -> None:
        """Each worker's thread budget and the modules it imports before its first run
        (:func:`configure_worker`): sent now as one task per worker, so that they import
        them while this process goes on; a worker that did not take one (another took
        two) does it first in its first run. Once per pool."""
        if self.configuration is not None:
            raise RuntimeError("the worker pool is configured already")
        self.configuration = (thread_budget, tuple(preload))
        for _ in range(self.count):
            self.executor.submit(configure_worker, *self.configuration)

    def prepare(self, make_defs: Callable[[], Any], instance: Any) -> None:
        """The definitions (``make_defs``: see :class:`WorkerSetup`) and instance (a
        ``dagster.DagsterInstance``) of the runs ``run_pool.run_all`` gives this pool.
        RuntimeError before :meth:`configure`."""
        if self.configuration is None:
            raise RuntimeError("configure the worker pool before preparing its runs")
        ref = instance.get_ref()
        self.setup = WorkerSetup(uuid.uuid4().hex, make_defs, ref, self.configuration)

    def interrupt(self) -> None:
        """Pass an interrupt on to this pool's workers still running (the processes it
        started; :data:`INTERRUPT_SIGNAL`): their runs stop as on Ctrl-C
        (:mod:`dpl_assets.interrupts`); one that has it already, or is idle, goes on; and
        no worker starts a run given to it after this (:attr:`stopped`)."""
        self.stopped.set()
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, INTERRUPT_SIGNAL)

    def close(self) -> None:
        """Wait for the workers to end (after their runs), or stop them unused."""
        if self._closed:
            return
        self._closed = True
        if self.used:
            self.executor.shutdown(wait=True)
            return
        for process in self._processes:
            process.terminate()  # SIGTERM to a worker this pool started
        # The executor's own thread reaps them: a second join from here raced it for the
        # exit status (waitpid), and the loser saw a dead worker as alive.
        self.executor.shutdown(wait=True, cancel_futures=True)


def start_pool(workers: int) -> WorkerPool | None:
    """``workers - 1`` worker processes beside this one (None for 1), not yet configured."""
    return WorkerPool(workers - 1) if workers > 1 else None


def default_workers(uses_gpu: bool = False) -> int:
    """``dpl run``'s worker processes when ``--workers`` is not given: ``DPL_WORKERS``, else
    one per core, at most 4 (each holds its own models: about 1.2 GB with wav2vec2-base
    and the face model), and when the graph runs a GPU model on a machine with GPUs, at
    most one per GPU (each process keeps its GPU lease for life: :mod:`dpl_assets.devices`).
    ValueError when ``DPL_WORKERS`` is not a positive integer."""
    given = os.environ.get(WORKERS_ENV)
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{WORKERS_ENV} must be a positive integer, not {given!r}")
        return int(given)
    workers = min(threads.cores(), 4)
    if uses_gpu:
        from dpl_assets.devices import visible_devices

        gpus, _ = visible_devices()
        if gpus > 0:
            workers = min(workers, gpus)
    return workers
