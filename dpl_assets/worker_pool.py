"""``dpl run``'s spawned worker processes (:class:`WorkerPool`), light to import.

``dpl run`` starts its workers first, before it imports Dagster and the nodes (~1.4 s of
its own start-up) and reads the graph: each worker imports Dagster and the project while
the ``dpl`` process does the same, then waits for :meth:`WorkerPool.configure` (its thread
budget and the graph's model libraries, known once the graph is read) and imports those
(torch, transformers, mediapipe: several seconds) while the ``dpl`` process opens the
instance and registers the videos. Runs reach the workers from
:mod:`dpl_assets.run_pool`, which executes them. This module imports neither Dagster nor
the nodes.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from dpl_assets import fast_exit, processes, threads

WORKERS_ENV = "DPL_WORKERS"

INTERRUPT_SIGNAL = signal.SIGUSR1
"""How the ``dpl`` process passes an interrupt on to its workers: not SIGINT, which a
worker that had the terminal's Ctrl-C already would take as a second one (and stop
waiting for the videos being computed)."""

WORKER_MODULES = ("dpl_assets.run_pool", "dpl_assets.definitions")
"""What every worker imports before it waits for its configuration (Dagster, the nodes)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to execute runs: the definitions (built by ``make_defs``, a
    picklable callable returning ``dagster.Definitions``) and the instance
    (``instance_ref``, a ``dagster.InstanceRef``). ``key`` names one setup (a worker
    builds each once)."""

    key: str
    make_defs: Callable[[], Any]
    instance_ref: Any


worker_state: dict[str, Any] = {}
"""This worker process's setup key, definitions and instance (:mod:`dpl_assets.run_pool`)."""


def _start_worker(configuration: Any, parent: int) -> None:
    """Worker initializer: crash, signal and parent-death handling first, then Dagster and
    the project (:data:`WORKER_MODULES`), then, once :meth:`WorkerPool.configure` sends
    them, the thread budget (before torch is imported) and the graph's model libraries. A
    worker exits without the interpreter's teardown (:mod:`dpl_assets.fast_exit`): what it
    made is saved by then."""
    fast_exit.set_status(0)  # its status when it ends normally (killed: no exit handlers)
    processes.show_native_crashes()  # a crash in native code shows where, as in dpl
    # Ctrl-C reaches the workers too: idle, they go on (their runs catch it: interrupts)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(INTERRUPT_SIGNAL, _interrupt_from_dpl)
    processes.exit_with_parent(parent, _last_words)  # dpl killed: stop, not go on unseen
    for module in WORKER_MODULES:
        importlib.import_module(module)
    thread_budget, preload = configuration.get()  # the pool is closed unused: SIGTERM
    os.environ[threads.THREADS_ENV] = str(thread_budget)
    threads.apply(thread_budget)  # OpenMP's pool size is read when torch loads
    for module in preload:
        importlib.import_module(module)


def _interrupt_from_dpl(signum: int, frame: Any) -> None:
    """A worker's :data:`INTERRUPT_SIGNAL` handler: the interrupt, unless it had it."""
    from dpl_assets import interrupts  # imported by then (WORKER_MODULES)

    if not interrupts.requested():
        signal.raise_signal(signal.SIGINT)  # ignored when idle; a run's handler otherwise


def _last_words() -> None:
    """A worker whose parent is gone, before it ends: see ``run_pool.last_words``."""
    from dpl_assets import run_pool

    run_pool.last_words()


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
        context = multiprocessing.get_context("spawn")
        self._configuration = context.SimpleQueue()
        self.executor = ProcessPoolExecutor(
            max_workers=count,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._configuration, os.getpid()),
        )
        before = {child.pid for child in multiprocessing.active_children()}
        # The pool starts a process per task submitted while none is idle: all start now.
        self.started: list[Future[int]] = [self.executor.submit(_started) for _ in range(count)]
        self._processes = [
            child for child in multiprocessing.active_children() if child.pid not in before
        ]
        self.configured = False
        self.used = False
        self.setup: WorkerSetup | None = None
        self._closed = False

    def configure(self, thread_budget: int, preload: Iterable[str] = ()) -> None:
        """Each worker's thread budget and the modules it imports before its first run
        (once; a worker waits for this before it takes a task)."""
        if self.configured:
            raise RuntimeError("the worker pool is configured already")
        self.configured = True
        for _ in range(self.count):
            self._configuration.put((thread_budget, tuple(preload)))

    def prepare(self, make_defs: Callable[[], Any], instance: Any) -> None:
        """The definitions (``make_defs``: see :class:`WorkerSetup`) and instance (a
        ``dagster.DagsterInstance``) of the runs ``run_pool.run_all`` gives this pool."""
        self.setup = WorkerSetup(uuid.uuid4().hex, make_defs, instance.get_ref())

    def interrupt(self) -> None:
        """Pass an interrupt on to this pool's workers still running (the processes it
        started; :data:`INTERRUPT_SIGNAL`): their runs stop as on Ctrl-C
        (:mod:`dpl_assets.interrupts`); one that has it already, or is idle, goes on."""
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
