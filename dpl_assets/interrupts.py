"""Ctrl-C stops ``dpl run``: the videos being computed end, what was saved is kept.

Dagster turns SIGINT (and SIGTERM, during a run) in a step into
``DagsterExecutionInterruptedError``, and for a step with a retry policy (ours:
``TRANSIENT_RETRY_POLICY``, for out-of-memory and lost GPUs) into a retry: Ctrl-C ran the
step again and the run went on to its end (measured: exit 0, 14 s after Ctrl-C). So the
per-video steps stop on it themselves (:func:`step_stops_on_interrupt`): the process
remembers it (:func:`request`), the step fails without a retry after the videos being
computed end (videos not started are not), and every step after it in the run fails at
once, before any work. ``dpl run`` then starts no further run, passes the interrupt on to
its worker processes, skips the dataset-level run and exits with :data:`EXIT_INTERRUPTED`;
the next ``dpl run`` computes what is missing. ffmpeg runs in a process group of its own
(:mod:`dpl_assets.media.ffmpeg`), so the terminal's Ctrl-C does not kill it mid-file:
a killed decoder would look like a bad video.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

EXIT_INTERRUPTED = 130
"""``dpl run``'s exit status after Ctrl-C (128 + SIGINT, as shells report it)."""
INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)

_requested = threading.Event()


def request() -> None:
    """Remember that this process was interrupted (its runs stop; see the module)."""
    _requested.set()


def requested() -> bool:
    """Whether :func:`request` was called since the last :func:`clear`."""
    return _requested.is_set()


def clear() -> None:
    """Forget an interrupt (a new ``dpl run`` in this process, a worker's next run)."""
    _requested.clear()


def stopped_step() -> dg.Failure:
    """The failure of a step stopped by an interrupt: never retried."""
    return dg.Failure(
        description="interrupted (Ctrl-C): this step stopped; what was saved is kept, and "
        "the next dpl run computes the rest",
        allow_retries=False,
    )


@contextmanager
def step_stops_on_interrupt() -> Iterator[None]:
    """Around a step's work: fail at once when this process was interrupted, and turn an
    interrupt met inside into that failure (:func:`stopped_step`), not a retry."""
    if requested():
        raise stopped_step()
    try:
        yield
    except INTERRUPTS:
        request()
        raise stopped_step() from None
