"""How many threads each library may use in this process: the per-process thread budget.

Several runs share the machine's cores: ``dpl run --workers N`` runs N processes, and the
instance's run queue (``max_concurrent_runs`` in ``dagster.yaml``) starts that many sensor
and backfill runs at once. Each library sizes its own pool to *all* cores by default
(torch's intra-op pool, OpenCV's, the video decoder's), so two processes on two cores ran
four busy threads each and lost time switching. The budget is ``cores // parallel runs``
(at least 1), set once per process:

- :func:`use` wins (``dpl run`` gives its own process cores // its ``--workers``);
- then ``DPL_THREADS`` in the environment (``dpl run --workers`` sets it for its workers);
- else cores // the instance's ``max_concurrent_runs`` (sensor, schedule and UI runs).

:func:`apply` hands the budget to torch (``torch.set_num_threads``, when torch is loaded),
OpenCV (``cv2.setNumThreads``) and, through :func:`decoder_threads`, to PyAV's decoder.
"""

from __future__ import annotations

import os
import sys
from typing import Any

THREADS_ENV = "DPL_THREADS"

_applied: int | None = None
_override: int | None = None


def cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parallel_runs(instance: Any) -> int:
    """How many runs ``instance``'s run queue starts at once (1 without a queue limit)."""
    from dagster._core.run_coordinator import QueuedRunCoordinator

    if isinstance(getattr(instance, "run_coordinator", None), QueuedRunCoordinator):
        # dagster.yaml's `concurrency: runs:` (or the coordinator's own config)
        queue = instance.get_concurrency_config().run_queue_config
        if queue is not None and queue.max_concurrent_runs > 0:
            return queue.max_concurrent_runs
    return 1


def use(threads: int | None) -> None:
    """Fix this process's budget at ``threads`` (None: back to the environment's rule)."""
    global _override
    _override = threads


def budget(instance: Any = None) -> int:
    """This process's thread budget (see the module). ValueError when ``DPL_THREADS`` is
    not a positive integer."""
    if _override is not None:
        return _override
    given = os.environ.get(THREADS_ENV)
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, not {given!r}")
        return int(given)
    return max(1, cores() // parallel_runs(instance)) if instance is not None else cores()


def apply(threads: int) -> None:
    """Give ``threads`` to torch's intra-op pool (when torch is loaded), OpenCV, and the
    OpenMP/BLAS pools of libraries loaded later. Cheap to call again."""
    global _applied
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if _applied == threads:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    import cv2

    cv2.setNumThreads(threads)
    _applied = threads


def decoder_threads() -> int:
    """PyAV codec threads for this process: the applied budget (0, FFmpeg's auto, before
    any step applied one)."""
    return _applied or 0
