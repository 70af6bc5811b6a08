"""Steps of a run on Celery workers (``dagster-celery``), and the queues they are routed to.

The supported layout: every machine (the one launching runs, every worker) sees the output
dir at the same path (a shared file system), and the Dagster instance's storage is shared
(Postgres, ``dpl init-instance --postgres``). Each step of a run is a Celery task; a worker
(``celery -A dpl_assets.celery_worker worker -Q cpu``) rebuilds the run's job from what the
task names (this module's :func:`celery_job` with the output dir and graph, or the
``dpl_assets`` code location) and executes that one step in its own process, writing its
outputs to the shared output dir (atomically, through staging: a killed step leaves no
partial file) and its events to the instance.

Routing: every step carries the op tag ``dagster-celery/queue``: ``gpu`` for the assets of
nodes that run a GPU model (the ``gpu`` pool), ``cpu`` for the others and for the output
checks. Start GPU machines' workers with ``-Q gpu`` and the others with ``-Q cpu``.

Broker and result backend: ``DPL_CELERY_BROKER`` and ``DPL_CELERY_BACKEND`` (URLs, e.g.
``redis://host:6379/0`` and ``redis://host:6379/1``), read by the run (executor) and by
the workers alike.

A worker killed mid-step (SIGKILL, out of memory, machine lost): tasks are acknowledged
late and rejected back to the queue when their worker process is lost
(:data:`CELERY_SETTINGS`), so the step runs again on a worker; the outputs it had saved
stay (each is complete: atomic writes), what it had not saved is computed then. Celery
requeues a task lost this way once; a step that fails with an error follows the asset's
Dagster retry policy instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

BROKER_ENV = "DPL_CELERY_BROKER"
BACKEND_ENV = "DPL_CELERY_BACKEND"

CELERY_SETTINGS: dict[str, Any] = {
    # A task is acknowledged when its step has ended, not when a worker takes it, and a
    # task whose worker process died (killed, out of memory) goes back to the queue: the
    # step is run again instead of being lost.
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    # One task at a time per worker process: a killed worker holds no other step back.
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
}
"""Celery settings of the runs' executor and of the workers (``dpl_assets.celery_worker``)."""


class CeleryUnavailable(RuntimeError):
    """Celery cannot be used here: the ``celery`` extra is not installed, or the broker
    variables are not set (the message says which)."""


def broker_urls() -> tuple[str, str]:
    """``(broker, backend)`` from :data:`BROKER_ENV` / :data:`BACKEND_ENV`; raises
    :class:`CeleryUnavailable` naming the variable that is not set, or when dagster-celery
    is not installed."""
    try:
        import dagster_celery  # noqa: F401
    except ImportError as error:
        raise CeleryUnavailable(
            f'dagster-celery is not installed ({error}): pip install -e ".[celery]"'
        ) from None
    missing = [name for name in (BROKER_ENV, BACKEND_ENV) if not os.environ.get(name)]
    if missing:
        raise CeleryUnavailable(
            f"Celery needs {' and '.join(missing)} (e.g. redis://127.0.0.1:6379/0 and "
            "redis://127.0.0.1:6379/1)"
        )
    return os.environ[BROKER_ENV], os.environ[BACKEND_ENV]


def celery_executor_def() -> dg.ExecutorDefinition:
    """dagster-celery's executor, broker and backend from the environment (resolved when a
    run starts), with :data:`CELERY_SETTINGS`. Raises ``ImportError`` without the
    ``celery`` extra (``pip install -e ".[celery]"``)."""
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": {"env": BROKER_ENV},
            "backend": {"env": BACKEND_ENV},
            "config_source": CELERY_SETTINGS,
        },
        name="celery",
    )


def celery_job(output_dir: str, graph_json: str, assets_json: str, job: str) -> dg.JobDefinition:
    """``dpl run``'s job ``job`` over ``assets`` of the graph, with the Celery executor: what
    a worker rebuilds for each step (the arguments travel in the task, as JSON strings)."""
    from dpl_assets.runner import run_definitions

    defs = run_definitions(
        Path(output_dir),
        json.loads(graph_json),
        json.loads(assets_json),
        executor=celery_executor_def(),
    )
    return defs.resolve_job_def(job)


def reconstructable_run_job(output_dir: Path, graph: list, assets: list[str], job: str) -> Any:
    """The :func:`celery_job` ``job`` as a reconstructable job (``dg.execute_job`` runs it;
    the workers rebuild it by module, function and these arguments)."""
    return dg.build_reconstructable_job(
        __name__,
        celery_job.__name__,
        reconstructable_kwargs={
            "output_dir": str(output_dir),
            "graph_json": json.dumps(graph),
            "assets_json": json.dumps(assets),
            "job": job,
        },
    )
