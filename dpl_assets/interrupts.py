"""Ctrl-C stops ``dpl run``: the videos being computed end, what was saved is kept.

Dagster turns SIGINT (and SIGTERM, during a run) in a step into
``DagsterExecutionInterruptedError``, and for a step with a retry policy (ours:
``TRANSIENT_RETRY_POLICY``, for out-of-memory and lost GPUs) into a retry: Ctrl-C ran the
step again and the run went on to its end (measured: exit 0, 14 s after Ctrl-C). So the
per-video steps stop on it themselves (:func:`step_stops_on_interrupt`): the process
remembers it (:func:`request`), the step fails without a retry after the videos being
computed end (videos not started are not), and every step after it in the run fails at
once, before any work. ``dpl run`` then starts no further run, passes the interrupt on to
its worker processes, skips the dataset-level run and exits with 130
(:data:`dpl_assets.cli.EXIT_INTERRUPTED`); the next ``dpl run`` computes what is missing.
ffmpeg runs in a process group of its own (:mod:`dpl_assets.media.ffmpeg`), so the
terminal's Ctrl-C does not kill it mid-file: a killed decoder would look like a bad video.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)

SIGNAL_POLL_S = 0.2
"""How long a thread that waits for work (a step for its videos, ``dpl run`` for its
workers) waits at a time: a signal the kernel gave another thread runs its handler in the
main thread only when that thread runs Python code."""

_lock = threading.Lock()
_stopped_runs: set[str] = set()  # runs whose later steps fail at once
_requested = threading.Event()  # any run of this process since the last clear()
_stop_event: Any = None  # a worker's pool event (stop_every_run_on): every run stopped once set


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Give SIGTERM back, when the block ends, the handling it had before (on the main
    thread; elsewhere nothing changes).

    Around a run executed in process, Dagster maps SIGTERM to SIGINT's handler (a step then
    stops on either) and leaves it so afterwards. In a process started with SIGINT ignored
    (``nohup dpl run &``, a background job of a script), SIGTERM then stayed ignored after
    the first run: ``kill`` no longer stopped it, and every process it started later
    inherited the ignored SIGTERM, among them the log tailers Dagster starts for each step
    and stops with SIGTERM (each step's end then waited 2 x 30 s for them, and left them
    running).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if before is not None:  # None: a handler set outside Python, not ours to restore
            signal.signal(signal.SIGTERM, before)


def request(run_id: str | None = None) -> None:
    """Remember that this process was interrupted, in run ``run_id`` when given (that run's
    later steps stop; a later run in a long-lived process, a Celery worker or a notebook,
    is not affected)."""
    if run_id is not None:
        with _lock:
            _stopped_runs.add(run_id)
    _requested.set()


def requested() -> bool:
    """Whether :func:`request` was called since the last :func:`clear` (``dpl run`` then
    starts no further run)."""
    return _requested.is_set()


def run_stopped(run_id: str) -> bool:
    """Whether run ``run_id`` was interrupted (its later steps fail at once), or every run
    of this process is (:func:`stop_every_run_on`)."""
    with _lock:
        if run_id in _stopped_runs:
            return True
    return every_run_stopped()


def every_run_stopped() -> bool:
    """Whether this worker's pool event (:func:`stop_every_run_on`) is set: no run or
    step starts here any more."""
    return _stop_event is not None and _stop_event.is_set()


def stop_every_run_on(event: Any) -> None:
    """In a ``dpl run`` worker: once ``event`` (its pool's, set when ``dpl`` is
    interrupted: :meth:`~dpl_assets.worker_pool.WorkerPool.interrupt`) is set, every step
    that starts fails at once, as in a stopped run. The signal ``dpl`` sends stops the step
    running then; this stops those that start after it, even if the signal came while the
    worker could not take it (starting up, between runs). Not undone by :func:`clear`."""
    global _stop_event
    _stop_event = event


def clear() -> None:
    """Forget every interrupt (a new ``dpl run`` in this process, a worker's next run)."""
    with _lock:
        _stopped_runs.clear()
    _requested.clear()


def interrupted(events: Iterable[dg.DagsterEvent]) -> bool:
    """Whether a run's ``events`` show an interrupt Dagster met outside the steps'
    own handling (between steps, writing events, loading inputs: it fails the run and
    returns, so nothing else says so)."""
    for event in events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None:
            if error.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
                return True
            error = error.cause
    return False


def stopped_step() -> dg.Failure:
    """The failure of a step stopped by an interrupt: never retried."""
    return dg.Failure(
        description="interrupted (Ctrl-C): this step stopped; what was saved is kept, and "
        "the next dpl run computes the rest",
        allow_retries=False,
    )


@contextmanager
def step_stops_on_interrupt(run_id: str) -> Iterator[None]:
    """Around a step's work in run ``run_id``: fail at once when the run was interrupted,
    and turn an interrupt met inside into that failure (:func:`stopped_step`), not a
    retry."""
    if run_stopped(run_id):
        raise stopped_step()
    try:
        yield
    except INTERRUPTS:
        request(run_id)
        raise stopped_step() from None
