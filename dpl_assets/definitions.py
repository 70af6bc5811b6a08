"""The Dagster entry point: ``dagster dev -w workspace.yaml`` or ``-m dpl_assets``."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dpl_assets.assets import ALL_ASSETS, DATASET_LEVEL_ASSETS
from dpl_assets.automation import SCHEDULES, SENSORS
from dpl_assets.checks import OUTPUT_CHECKS
from dpl_assets.partitions import video_partitions
from dpl_assets.resources import TorchDevice, Wav2vecModels
from dpl_assets.settings import output_dir_from_env
from dpl_assets.storage.io_manager import ArtifactIOManager, ArtifactStorage

offline_audio_job = dg.define_asset_job(
    "offline_audio",
    selection=dg.AssetSelection.assets("probe", "wav", "volume"),
    partitions_def=video_partitions,
    description="The default graph: probe, 16 kHz wav and volume; needs no model weights.",
)

offline_default_job = dg.define_asset_job(
    "offline_default",
    selection=dg.AssetSelection.all()
    # wav2vec weights, EMOCA weights and FLAME files are the user's to bring
    - dg.AssetSelection.assets(
        "wav2vec", "shape", "tex", "exp", "pose", "cam", "light"
    ).downstream()
    - dg.AssetSelection.assets(*DATASET_LEVEL_ASSETS),
    description="Every per-video asset that needs no model files you bring (no wav2vec, EMOCA, "
    "FLAME or renders).",
)

_STOCK_EXECUTOR = dg.multi_or_in_process_executor

in_process_by_default_executor = dg.ExecutorDefinition(
    name="in_process_or_multiprocess",
    config_schema=dg.Field(
        _STOCK_EXECUTOR.config_schema.config_type, default_value={"in_process": {}}
    ),
    requirements=_STOCK_EXECUTOR.get_requirements,
    executor_creation_fn=_STOCK_EXECUTOR.executor_creation_fn,
    description="Dagster's default executor, in process unless the run config says "
    "`execution: {config: {multiprocess: {max_concurrent: N}}}`.",
)
"""Every step of a run in the run's own process, unless its config asks for processes.

The stock default starts a process per step, and each loads this code location again
(~2-6 s here) before doing any work: most of a small run's time. In process, models also
load once per run, not once per step. A GPU lease is then held by the run's process
(``dpl_assets.devices``); retries and pools work as before (pools count runs here:
``granularity: run``). To spread a large run's steps over the cores, launch it with
``{"execution": {"config": {"multiprocess": {"max_concurrent": 2}}}}`` in its config.
"""

dataset_job = dg.define_asset_job(
    "dataset_level",
    selection=dg.AssetSelection.assets(*DATASET_LEVEL_ASSETS),
    description="The dataset pack and summary over every registered video (not partitioned).",
)


def build_definitions(
    output_dir: Path | str | None = None, jobs: list[dg.UnresolvedAssetJobDefinition] | None = None
) -> dg.Definitions:
    """All assets and resources, writing under ``output_dir`` (default: ``DPL_OUTPUT_DIR``)."""
    storage = ArtifactStorage(output_dir=str(output_dir or output_dir_from_env()))
    return dg.Definitions(
        assets=ALL_ASSETS,
        asset_checks=OUTPUT_CHECKS,
        resources={
            "storage": storage,
            "artifacts": ArtifactIOManager(storage=storage),
            "torch_device": TorchDevice(),
            "wav2vec_models": Wav2vecModels(),
        },
        jobs=[offline_audio_job, offline_default_job, dataset_job, *(jobs or [])],
        executor=in_process_by_default_executor,
        sensors=SENSORS,
        schedules=SCHEDULES,
    )
