"""The Celery app of the workers: ``celery -A dpl_assets.celery_worker worker -Q cpu``.

dagster-celery's own ``dagster_celery.app`` reads its broker from a generated config module;
this app takes the broker and result backend from ``DPL_CELERY_BROKER`` /
``DPL_CELERY_BACKEND`` (as the runs' executor does, :mod:`dpl_assets.cluster`) and the
late-acknowledgement settings that requeue the step of a killed worker. Importing it
without those variables raises ``CeleryUnavailable`` naming them. The task it registers is
dagster-celery's ``execute_plan``: one step of a run, in the worker's process.
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from dpl_assets.cluster import CELERY_SETTINGS, broker_urls

_broker, _backend = broker_urls()
app = make_app(
    CeleryExecutor.for_cli(
        broker=_broker, backend=_backend, config_source=dict(CELERY_SETTINGS)
    ).app_args()
)
execute_plan = create_task(app)
