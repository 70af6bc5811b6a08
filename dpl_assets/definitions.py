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
        sensors=SENSORS,
        schedules=SCHEDULES,
    )
