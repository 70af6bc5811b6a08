"""Which executor runs the steps of the code location's jobs, and the tags steps carry for it.

``DPL_EXECUTOR`` (read when the definitions load, on every process of a deployment alike):

- unset or ``in_process``: Dagster's executor, in the run's own process unless the run
  config asks for processes (:data:`dpl_assets.definitions.in_process_by_default_executor`);
- ``celery``: every step a Celery task on the workers of its queue (:mod:`dpl_assets.cluster`);
- ``k8s``: every step a Kubernetes job (``dagster-k8s``'s ``k8s_job_executor``, the
  ``k8s`` extra; ``deploy/`` has the image and Helm values).

Every step is tagged for all of them (:func:`step_tags`): the Celery queue (``gpu`` or
``cpu``), and for the steps of GPU nodes the ``dagster-k8s/config`` that asks Kubernetes
for one GPU on a GPU node. A tag an executor does not read does nothing.
"""

from __future__ import annotations

import os
from typing import Any

EXECUTOR_ENV = "DPL_EXECUTOR"
EXECUTORS = ("in_process", "celery", "k8s")

CELERY_QUEUE_TAG = "dagster-celery/queue"
"""The op tag dagster-celery routes a step by (``dagster_celery.tags``)."""
GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"

K8S_CONFIG_TAG = "dagster-k8s/config"
"""The op tag ``k8s_job_executor`` merges into a step's pod (``dagster_k8s``)."""
K8S_GPU_STEP: dict[str, Any] = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
    # GPU node pools are usually tainted so that only pods asking for a GPU land there.
    "pod_spec_config": {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    },
}


def executor_name() -> str:
    """:data:`EXECUTOR_ENV` (``in_process`` when unset); ValueError for another value."""
    value = os.environ.get(EXECUTOR_ENV, "").strip() or "in_process"
    if value not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: use one of {', '.join(EXECUTORS)}")
    return value


def uses_celery() -> bool:
    """Whether :data:`EXECUTOR_ENV` asks for Celery (ValueError for an unknown value)."""
    return executor_name() == "celery"


def step_tags(needs_gpu: bool) -> dict[str, Any]:
    """The op tags of a step: its Celery queue, and for a GPU node's step one GPU on
    Kubernetes."""
    if not needs_gpu:
        return {CELERY_QUEUE_TAG: CPU_QUEUE}
    return {CELERY_QUEUE_TAG: GPU_QUEUE, K8S_CONFIG_TAG: K8S_GPU_STEP}


def k8s_executor_def() -> Any:
    """``dagster-k8s``'s ``k8s_job_executor`` (its config comes from the run config and the
    Helm values). ImportError naming the extra when ``dagster-k8s`` is not installed."""
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as error:
        raise ImportError(
            f'{EXECUTOR_ENV}=k8s needs dagster-k8s ({error}): pip install -e ".[k8s]"'
        ) from error
    return k8s_job_executor
